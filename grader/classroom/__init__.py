"""Grading a class: the instructor's course folder (``course``), grading every submission N at a time
(``grading``), the class report (``report``) and nbgrader's plug-ins (``nbgrader_plugins``).

The grader has three layers: the checks (``grader.core``, ``grader.checks``), running a learner's code in
isolation (``grader.sandbox``, ``grader.autograde``, ``grader.isolated``), and this package, which grades a class
with them.
"""

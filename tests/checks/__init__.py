"""The chapters' check tests, one module per chapter folder (test_<slug>.py); a package so that their names
do not clash with the helpers' tests beside them (tests/test_open_models.py)."""

"""Loopback only: refuse every network connection and name lookup that leaves this machine.

Python imports this module at start-up when its folder is on ``PYTHONPATH`` (``tests/offline.py`` puts it
there), so the guard holds in the test's child and in every Python process it starts: Jupyter kernels,
``pip``. Each refused attempt is appended, as one JSON line, to ``$LLMCOURSE_BLOCKED_LOG``.
"""

import ipaddress
import json
import os
import socket
import sys
import traceback

LOCAL_NAMES = {"", "localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}


def _is_local(host) -> bool:
    if host is None:  # getaddrinfo(None, port): this machine's own addresses
        return True
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    host = str(host).strip("[]").split("%")[0].lower()
    if host in LOCAL_NAMES:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def _refuse(event: str, host, port, error: OSError):
    log = os.environ.get("LLMCOURSE_BLOCKED_LOG")
    if log:
        caller = next((f"{f.filename}:{f.lineno}" for f in reversed(traceback.extract_stack()[:-3])
                       if "offline_guard" not in f.filename and "/socket.py" not in f.filename), "?")
        with open(log, "a", encoding="utf-8") as f:
            f.write(json.dumps({"pid": os.getpid(), "event": event, "host": str(host), "port": port,
                                "argv": sys.argv[:2], "caller": caller}) + "\n")
    raise error


def _guard(event: str, args: tuple) -> None:
    if event in ("socket.connect", "socket.sendto", "socket.sendmsg") and len(args) >= 2:
        sock, address = args[0], args[1]
        if getattr(sock, "family", None) in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple):
            if not _is_local(address[0]):
                _refuse(event, address[0], address[1],
                        ConnectionRefusedError(111, f"blocked by the test's loopback-only guard: {address[0]}"))
    elif event == "socket.getaddrinfo" and not _is_local(args[0]):
        _refuse(event, args[0], args[1], socket.gaierror(socket.EAI_NONAME, f"blocked lookup of {args[0]}"))
    elif event == "socket.gethostbyname" and not _is_local(args[0]):
        _refuse(event, args[0], None, socket.gaierror(socket.EAI_NONAME, f"blocked lookup of {args[0]}"))


sys.addaudithook(_guard)

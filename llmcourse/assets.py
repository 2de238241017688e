"""What the course needs on disk to run offline: where each model and dataset is, and fetching them all."""

from dataclasses import dataclass
from pathlib import Path

from llmcourse import data, models
from llmcourse.cache import verify_manifest


@dataclass
class Asset:
    """One model or dataset: its local copy (None when missing) and why it is missing."""

    name: str
    kind: str
    path: Path | None
    problem: str | None = None

    @property
    def size_bytes(self) -> int:
        if self.path is None:
            return 0
        if self.path.is_file():
            return self.path.stat().st_size
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())


def _model_assets(full: bool) -> list[Asset]:
    found = []
    for model in models.SHIPPED.values():
        folder = model.local_folder()
        if folder is not None and folder == model.cache_folder() and full:
            folder = None if model.cached_problem(full) else folder  # an installed package has no manifest
        if folder is None:
            found.append(Asset(model.name, "model", None, model.cached_problem(full)))
        elif model.gguf_file is None:
            found.append(Asset(model.name, "model", folder))
        else:
            found.append(Asset(f"{model.name} (GGUF)", "model", folder / model.gguf_file))
            converted = model.converted_path(folder / model.gguf_file)
            problem = verify_manifest(converted, full) if converted.exists() else "not converted yet"
            found.append(Asset(f"{model.name} (safetensors)", "model", None if problem else converted, problem))
    return found


def _data_assets(full: bool) -> list[Asset]:
    found = []
    for packaged in data.PACKAGED:
        problem = packaged.cached_problem(full)
        found.append(Asset(packaged.name, "data", None if problem else packaged.cache_folder(), problem))
    for task in data.COURSE_BIGBENCH_TASKS:
        path = data.bigbench_path(task)
        found.append(Asset(f"bigbench/{task}", "data", path,
                           None if path else data.shipped_problem(data.bigbench_file(task))))
    path = data.course_file(data.CHINCHILLA_FILE)
    found.append(Asset("chinchilla points", "data", path, None if path else data.shipped_problem(data.CHINCHILLA_FILE)))
    return found


def assets(full: bool = False) -> list[Asset]:
    """Every model and dataset the course uses, with its local state. Cached files are checked by size and
    modification time, and hashed again where those changed; ``full=True`` hashes every file again."""
    return _model_assets(full) + _data_assets(full)


def fetch_all() -> list[str]:
    """Fetch (and convert) everything that is missing; returns the problems that remain."""
    from tqdm.auto import tqdm

    def shipped_data():  # nothing to fetch: it ships with the package; a damaged copy is named here
        problems = [f"bigbench/{t}: {data.shipped_problem(data.bigbench_file(t))}"
                    for t in data.COURSE_BIGBENCH_TASKS if data.bigbench_path(t) is None]
        if problems:
            raise data.DataNotAvailable("; ".join(problems))
        data.chinchilla_path()  # a damaged copy is downloaded again where GitHub is reachable

    steps = [(m.name, m.converted_folder if m.gguf_file else m.folder) for m in models.SHIPPED.values()]
    steps += [(d.name, d.folder) for d in data.PACKAGED]
    steps += [("data shipped with the course", shipped_data)]
    problems = []
    with tqdm(steps, desc="course models and data", unit="item") as bar:
        for name, step in bar:
            bar.set_postfix_str(name)
            try:
                step()
            except (models.ModelNotAvailable, data.DataNotAvailable) as err:
                problems.append(f"{name}: {err}")
    return problems

"""What a run directory's files must hold to be read: config.json, status.json, a record line, an
image-index line, an analysis declaration — each check says why a file or line is not one ftdyn wrote
(None when it is), so that readers name damage in one line instead of failing on it. Torch-free."""

from __future__ import annotations

from typing import Any

from engine.run_files import CONFIG, STATUS
from engine.untrusted import number_or_none


def record_problem(record: Any) -> str | None:
    """Why one line of records.jsonl is not a record ftdyn wrote (None when it is one)."""
    if not isinstance(record, dict):
        return f"a {type(record).__name__}, not an object"
    if not isinstance(record.get("kind"), str):
        return "no 'kind'"
    if record["kind"] in ("epoch", "step") and not is_count(record.get("epoch")):
        return "'epoch' is not a whole number ≥ 0"
    if record.get("step") is not None and not is_count(record["step"]):
        return "'step' is not a whole number ≥ 0"
    for key in ("train", "held_out"):
        split = record.get(key)
        if split is None:
            continue
        if not isinstance(split, dict):
            return f"'{key}' is not an object"
        if not is_number(split.get("accuracy")) or not (split.get("loss") is None or is_number(split["loss"])):
            return f"'{key}' has no numeric accuracy and loss"
    return None


def config_problem(config: Any) -> str | None:
    """Why config.json is not one ftdyn wrote (None when it is): the fields every reader relies on."""
    if not isinstance(config, dict):
        return f"{CONFIG} holds a {type(config).__name__}, not an object"
    shapes = {"run": dict, "model": dict, "dataset": dict, "strategy": dict, "layers": list, "measures": list,
              "analyses": list}
    for key, kind in shapes.items():  # present means well-formed (readers write config.get(key, {}).get(…))
        if key in config and not isinstance(config[key], kind):
            return f"{CONFIG}: '{key}' is not {'an object' if kind is dict else 'a list'}"
    for key, field_name in (("layers", "name"), ("measures", "label")):
        if not all(isinstance(item, dict) and isinstance(item.get(field_name), str) for item in config.get(key) or []):
            return f"{CONFIG}: an entry of '{key}' has no '{field_name}'"
    for key, field_name in (("model", "name"), ("dataset", "root"), ("strategy", "name")):
        value = (config.get(key) or {}).get(field_name)
        if value is not None and not isinstance(value, str):
            return f"{CONFIG}: '{key}.{field_name}' is not text"
    for key, annotation in RUN_SETTINGS_READ.items():  # the settings readers use, not only the trainer
        value = (config.get("run") or {}).get(key)
        if value is not None and not setting_fits(value, annotation):
            return f"{CONFIG}: setting 'run.{key}' is not {annotation}"
    shuffle = (config.get("run") or {}).get("shuffle_blocks")
    if shuffle is not None and shuffle != "pixel" and not (shuffle.isdigit() and shuffle.isascii()):
        return f"{CONFIG}: setting 'run.shuffle_blocks' is neither a block size nor 'pixel'"
    classes = (config.get("dataset") or {}).get("classes")
    if classes is not None and not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        return f"{CONFIG}: 'dataset.classes' is not a list of names"
    for part in config.get("analyses") or []:
        problem = declaration_problem(part)
        if problem:
            return f"{CONFIG}: an analysis declaration {problem}"
    return None


# RunConfig settings that the report and the app read from config.json (the trainer checks all of them).
RUN_SETTINGS_READ = {"model": "str", "weights": "str", "data": "str", "image_size": "int", "epochs": "int",
                     "seed": "int", "strategy": "str", "shuffle_blocks": "str | None"}


def setting_fits(value: Any, annotation: str) -> bool:
    """Whether a setting read from config.json has the declared type (``'float | None'``, ``'list[str]'``)."""
    kinds = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "None": (type(None),)}
    for option in annotation.split("|"):
        option = option.strip()
        if option.startswith("list["):
            inner = kinds[option[5:-1]]
            if isinstance(value, list) and all(isinstance(v, inner) and not isinstance(v, bool) for v in value):
                return True
        elif isinstance(value, kinds[option]) and (option == "bool" or not isinstance(value, bool)):
            return True
    return False


def declaration_problem(part: Any) -> str | None:
    """Why an analysis part's declaration cannot be drawn (None when it can)."""
    if not isinstance(part, dict) or not isinstance(part.get("name"), str):
        return "has no name"
    if part.get("display") != "series":
        return None
    if not is_text_list(part.get("measures")):
        return f"'{part['name']}' has no list of measures"
    rows = part.get("rows")
    if not isinstance(rows, dict) or not all(isinstance(v, str) and is_text_list(r) for v, r in rows.items()):
        return f"'{part['name']}' has no rows per view"
    for key in ("section", "layout", "title", "unit"):
        if part.get(key) is not None and not isinstance(part[key], str):
            return f"'{part['name']}': '{key}' is not text"
    return None


def status_problem(status: Any) -> str | None:
    """Why status.json is not one ftdyn wrote (None when it is)."""
    if not isinstance(status, dict):
        return f"{STATUS} holds a {type(status).__name__}, not an object"
    for key in ("state", "host", "message"):
        if status.get(key) is not None and not isinstance(status[key], str):
            return f"{STATUS}: '{key}' is not text"
    for key in ("epoch", "total_epochs", "pid", "world_size"):
        if status.get(key) is not None and not is_count(status[key]):
            return f"{STATUS}: '{key}' is not a whole number"
    if status.get("hosts") is not None and not is_text_list(status["hosts"]):
        return f"{STATUS}: 'hosts' is not a list of names"
    for key in ("started_at", "updated_at", "finished_at", "best_accuracy"):
        if status.get(key) is not None and not is_number(status[key]):
            return f"{STATUS}: '{key}' is not a number"
    return None


def is_number(value: Any) -> bool:
    return number_or_none(value) is not None


def is_text_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def vis_entry_problem(entry: Any) -> str | None:
    """Why one line of vis/index.jsonl is not an image entry (None when it is one)."""
    if not isinstance(entry, dict):
        return f"a {type(entry).__name__}, not an object"
    for key in ("layer", "kind", "class", "path"):
        if not isinstance(entry.get(key), str):
            return f"no '{key}'"
    if entry["kind"] not in ("class", "sample"):
        return f"kind '{entry['kind'][:20]}' is neither class nor sample"
    for key in ("filter", "epoch") + (("image",) if entry["kind"] == "sample" else ()):
        if not is_count(entry.get(key)):
            return f"'{key}' is not a whole number ≥ 0"
    return None


def is_count(value: Any) -> bool:
    """A whole number ≥ 0 that fits the int64 arrays readers put epochs and steps in."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**62

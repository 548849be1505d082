"""`--arm NAME=SPEC`: what a study compares.

SPEC is one of
- a folder of images made elsewhere:  `uno=outputs/uno/`  (or `uno=folder=outputs/uno/`);
- a model spec as comma-separated keys: `dpo=base=/models/FLUX.1-dev,stage1=s1/lora,dpo=dpo-r1/lora,ref_scale=1`
  (`base` required; `stage1`, `dpo` LoRA files or folders; `ref_scale` the reference-guidance scale, 1 = the
  paper's sampler);
- a YAML file with the same keys: `dpo=arms/dpo.yaml` (for paths that hold a comma).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from storyloop.db.models import ArmKind
from storyloop.db.rounds import ModelSpec
from storyloop.studies.errors import StudyError

ARM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MODEL_KEYS = ("base", "stage1", "dpo", "ref_scale")
SPEC_HELP = ("NAME=SPEC, repeated. SPEC: a folder of images (NAME=DIR, matched to scenarios by file name "
             "<scenario id>.png or <scenario id>_<seed>.png), or a model: NAME=base=PATH|HUB_ID[,stage1=PATH]"
             "[,dpo=PATH][,ref_scale=1.0], or NAME=FILE.yaml with those keys.")


@dataclass(frozen=True)
class ArmSpec:
    name: str
    kind: ArmKind
    model: ModelSpec | None = None
    reference_guidance_scale: float | None = None
    folder: Path | None = None

    def columns(self) -> dict:
        """The StudyArm columns; a model arm's LoRAs are hashed here (a missing one is a StudyError)."""
        if self.kind is ArmKind.folder:
            return {"name": self.name, "kind": self.kind, "folder": str(self.folder.resolve())}
        try:
            cols = self.model.columns()
        except StudyError:
            raise
        except ValueError as exc:  # RoundError from ModelSpec: a LoRA path that does not exist
            raise StudyError(f"arm {self.name!r}: {exc}") from None
        return {"name": self.name, "kind": self.kind, "reference_guidance_scale": self.reference_guidance_scale,
                **cols}


def parse_arm(text: str) -> ArmSpec:
    """One `--arm` value; a StudyError that names the arm for anything wrong."""
    name, sep, spec = text.partition("=")
    name, spec = name.strip(), spec.strip()
    if not sep or not spec:
        raise StudyError(f"--arm {text!r}: expected NAME=SPEC")
    if not ARM_NAME.match(name):
        raise StudyError(f"--arm {text!r}: an arm name is 1-64 letters, digits, '_', '.' or '-'")
    if spec.startswith("folder="):
        return _folder_arm(name, Path(spec.removeprefix("folder=")).expanduser())
    if "=" in spec:
        return _model_arm(name, dict(_pairs(name, spec)))
    path = Path(spec).expanduser()
    if path.suffix in (".yaml", ".yml"):
        return _model_arm(name, _read_yaml(name, path))
    return _folder_arm(name, path)


def parse_arms(texts: list[str]) -> list[ArmSpec]:
    """Every `--arm`, in order; two arms with one name are refused."""
    arms = [parse_arm(t) for t in texts]
    seen: set[str] = set()
    for arm in arms:
        if arm.name in seen:
            raise StudyError(f"two arms are named {arm.name!r}: each arm needs its own name")
        seen.add(arm.name)
    return arms


def _folder_arm(name: str, path: Path) -> ArmSpec:
    if not path.is_dir():
        raise StudyError(f"arm {name!r}: {path} is not a folder (a folder arm needs a folder of images; a model "
                         "arm is written base=...)")
    return ArmSpec(name, ArmKind.folder, folder=path)


def _pairs(name: str, spec: str):
    for part in spec.split(","):
        key, sep, value = part.partition("=")
        if not sep or not value.strip():
            raise StudyError(f"arm {name!r}: {part!r} is not KEY=VALUE (keys: {', '.join(MODEL_KEYS)})")
        yield key.strip(), value.strip()


def _read_yaml(name: str, path: Path) -> dict:
    import yaml

    from storyloop.generation.config import read_yaml

    try:
        data = read_yaml(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise StudyError(f"arm {name!r}: cannot read {path} ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:  # a user's file, reported as one line
        raise StudyError(f"arm {name!r}: {path} is not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise StudyError(f"arm {name!r}: {path} must hold a mapping of {', '.join(MODEL_KEYS)}")
    return {str(k): v for k, v in data.items() if v is not None}


def _model_arm(name: str, keys: dict) -> ArmSpec:
    unknown = sorted(set(keys) - set(MODEL_KEYS))
    if unknown:
        raise StudyError(f"arm {name!r}: unknown key(s) {', '.join(unknown)} (keys: {', '.join(MODEL_KEYS)})")
    if not keys.get("base"):
        raise StudyError(f"arm {name!r}: a model arm needs base=PATH or a hub id")
    if keys.get("dpo") and not keys.get("stage1"):
        raise StudyError(f"arm {name!r}: a DPO LoRA refines a Stage-1 LoRA: give stage1= too")
    try:
        scale = float(keys.get("ref_scale", 1.0))
    except (TypeError, ValueError):
        raise StudyError(f"arm {name!r}: ref_scale must be a number, got {keys['ref_scale']!r}") from None
    if scale < 0:
        raise StudyError(f"arm {name!r}: ref_scale must be >= 0")
    base = str(keys["base"])
    from storyloop.generation.fingerprint import looks_like_path

    if looks_like_path(base):
        if not Path(base).expanduser().exists():
            raise StudyError(f"arm {name!r}: base {base}: no such folder")
        base = str(Path(base).expanduser().resolve())  # generation may run from another folder
    spec = ModelSpec(base, *(Path(str(keys[k])).expanduser() if keys.get(k) else None for k in ("stage1", "dpo")))
    return ArmSpec(name, ArmKind.model, model=spec, reference_guidance_scale=scale)

"""A Hugging Face cache laid out as `hf download` and `datasets.load_dataset` leave it, for offline tests.

Models: `<HF_HOME>/hub/models--<org>--<name>/{blobs/<hash>, snapshots/<commit>/<file> -> blob, refs/main}`.
Datasets: the prepared Arrow cache `<HF_HOME>/datasets/<org>___<name>/<config>/0.0.0/<commit>/` that a finished
`load_dataset` leaves (`<name>-<split>.arrow` and dataset_info.json), which is what it reads offline.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def write_hub_model(hf_home: Path, repo_id: str, folder: str | Path) -> Path:
    """Put the files of a save_pretrained `folder` into the hub cache as `repo_id`; returns the snapshot folder."""
    repo = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
            blob.write_bytes(data)
            link = snapshot / path.relative_to(folder)
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(os.path.relpath(blob, link.parent), link)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    return snapshot


def write_hub_dataset(hf_home: Path, repo_id: str, splits: dict, config: str = "default") -> Path:
    """Prepare `splits` ({split: datasets.Dataset}) as `load_dataset(repo_id, config)` leaves them in the cache."""
    from datasets.packaged_modules.parquet.parquet import Parquet

    namespace, name = repo_id.split("/")
    source = hf_home / "sources" / repo_id / config
    source.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, rows in splits.items():
        rows.to_parquet(str(source / f"{split}.parquet"))
        files[split] = str(source / f"{split}.parquet")
    cached = f"{namespace}___{name}"
    builder = Parquet(
        cache_dir=str(hf_home / "datasets"), dataset_name=cached, config_name=config, config_id=config,
        hash=COMMIT, data_files=files, features=next(iter(splits.values())).features,
    )  # fmt: skip
    builder.download_and_prepare()
    folder = Path(builder.cache_dir)
    for arrow in folder.glob(f"{cached}-*.arrow"):  # load_dataset names them after the repository's name
        arrow.rename(folder / arrow.name.replace(cached, name, 1))
    info = json.loads((folder / "dataset_info.json").read_text())
    info["dataset_name"] = name
    (folder / "dataset_info.json").write_text(json.dumps(info))
    shutil.rmtree(hf_home / "sources")
    for lock in (hf_home / "datasets").glob("*.lock"):
        lock.unlink()
    return folder

"""``--device``: auto picks CUDA only when torch sees one; bf16 autocast only on CUDA."""

import json

import numpy as np
import pytest
import torch

from geocells.cli import main
from geocells.models.device import (
    batch_size_for,
    check_device,
    inference_autocast,
    resolve_device,
)


def test_auto_is_cuda_only_when_available(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="no CUDA device"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("auto") == torch.device("cuda")
    with pytest.raises(ValueError, match="sees 1 GPU"):
        resolve_device("cuda:3")


def test_bad_names_and_batch_defaults():
    for name in ("gpu", "tpu", "cuda:x", ""):
        with pytest.raises(ValueError, match="unknown device"):
            check_device(name)
    assert batch_size_for(torch.device("cpu")) == 32
    assert batch_size_for(torch.device("cuda")) == 256
    assert batch_size_for(torch.device("cuda"), 7) == 7
    with inference_autocast(torch.device("cpu")):
        assert not torch.is_autocast_enabled()


ARGUMENTS = {
    "locate": ["DB", "a.jpg"],
    "calibrate": ["DB"],
    "eval": ["DB", "--out", "REPORT"],
    "index": ["RUN", "--out", "DB"],
    "refit": ["RUN"],
    "serve": ["DB"],
}


@pytest.mark.parametrize("command", sorted(ARGUMENTS))
def test_every_model_command_takes_device(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    assert "--device" in capsys.readouterr().out
    assert main([command, *ARGUMENTS[command], "--device", "tpu"]) == 2
    assert "unknown device 'tpu'" in capsys.readouterr().err


def test_locate_and_calibrate_run_on_the_cpu_when_asked(micro_db, micro_dataset, tmp_path, capsys):
    import shutil

    from geocells.locate import Localizer

    image = str(micro_dataset / "ground" / "images" / "000.jpg")
    argv = ["locate", str(micro_db), image, "--device", "cpu", "--no-progress"]
    assert main(argv) == 0
    on_cpu = json.loads(capsys.readouterr().out)["results"][0]["predictions"]
    default = Localizer.load(micro_db).locate([image], top_k=5)[0]
    assert [p["token"] for p in on_cpu] == [p.token for p in default]
    localizer = Localizer.load(micro_db, device="cpu")
    assert localizer.batch_size == 32
    assert {p.device.type for p in localizer.model.parameters()} == {"cpu"}
    db = tmp_path / "db"
    shutil.copytree(micro_db, db)
    assert main(["calibrate", str(db), "--dataset", str(micro_dataset), "--device", "cpu"]) == 0
    if not torch.cuda.is_available():
        code = main(["locate", str(micro_db), image, "--device", "cuda", "--no-progress"])
        assert code == 2 and "no CUDA device" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_embeddings_match_the_cpu(micro_db, micro_dataset):
    from geocells.locate import Localizer

    images = sorted(str(p) for p in (micro_dataset / "ground" / "images").glob("*.jpg"))[:8]
    cpu = Localizer.load(micro_db, device="cpu").embed(images)
    cuda = Localizer.load(micro_db, device="cuda")
    assert cuda.batch_size == 256
    on_gpu = cuda.embed(images)
    assert on_gpu.dtype == np.float32
    assert (np.sum(cpu * on_gpu, axis=1) > 0.99).all()  # bf16 rounding, same directions

"""The CLI error handler and shared helpers of stemtomo/cli/_common.py."""

from __future__ import annotations

import errno

import pytest
import torch
import typer
from typer.testing import CliRunner

from stemtomo.cli._common import (
    STATE,
    DebugOpt,
    DeviceOpt,
    handle_errors,
    options_dict,
    parse_shape,
    progress,
    resolve_device,
    setup,
    warn,
)
from stemtomo.errors import DeviceError, InputError, ParameterError

RAISES = {
    "input": lambda: InputError("ts.mrc: 3 tilt angles but 4 images; the counts must match"),
    "multiline": lambda: InputError("first line\nsecond line"),
    "markup": lambda: InputError("run[1].mrc: [bold]not markup[/bold]"),
    "emoji": lambda: InputError("--tilts 'a:b:c': expected START:STOP:STEP in :smile: degrees"),
    "oserror": lambda: OSError(errno.ENOSPC, "No space left on device", "out.mrc"),
    "internal": lambda: RuntimeError("boom"),
    "usage": lambda: typer.BadParameter("--iterations must be > 0"),
    "memory": lambda: MemoryError(),
    "interrupt": lambda: KeyboardInterrupt(),
    "gpu_oom": lambda: torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
}


def _app() -> typer.Typer:
    app = typer.Typer(add_completion=False)

    def fail(what: str, debug: DebugOpt = False) -> None:
        setup(debug=debug)
        raise RAISES[what]()

    def device(device: DeviceOpt = "auto") -> None:
        setup()
        typer.echo(str(resolve_device(device)))

    app.command("fail")(handle_errors(fail))
    app.command("device")(handle_errors(device))
    return app


@pytest.fixture
def run():
    app, runner = _app(), CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, list(args))

    return invoke


@pytest.mark.parametrize(
    ("what", "code", "line"),
    [
        ("input", 1, "error: ts.mrc: 3 tilt angles but 4 images; the counts must match"),
        ("multiline", 1, "error: first line second line"),
        ("markup", 1, "error: run[1].mrc: [bold]not markup[/bold]"),  # printed literally, not styled away
        ("emoji", 1, "error: --tilts 'a:b:c': expected START:STOP:STEP in :smile: degrees"),  # no emoji codes
        ("oserror", 1, "error: out.mrc: No space left on device"),
        ("internal", 70, "error: internal error: RuntimeError: boom (rerun with --debug for the traceback)"),
        ("memory", 1, "error: out of memory; use a smaller input, --device cpu, or a machine with more memory"),
        ("interrupt", 130, "error: interrupted"),
        ("gpu_oom", 1, "error: out of GPU memory (CUDA out of memory. Tried to allocate 2.00 GiB); "
                       "reduce the batch/chunk size or use --device cpu"),
    ],
)
def test_errors_become_one_line_without_traceback(run, what: str, code: int, line: str) -> None:
    result = run("fail", what)
    assert result.exit_code == code
    assert result.stderr.splitlines() == [line]
    assert "Traceback" not in result.output
    assert result.stdout == ""


def test_usage_errors_raised_in_a_command_stay_usage_errors(run) -> None:
    result = run("fail", "usage")
    assert result.exit_code == 2  # Typer's usage error, not an "internal error"
    assert "--iterations must be > 0" in result.stderr
    assert "internal error" not in result.stderr


def test_debug_shows_the_traceback(run) -> None:
    result = run("fail", "input", "--debug")
    assert result.exit_code == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert "stemtomo.errors.InputError: ts.mrc: 3 tilt angles" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ts.mrc")
    assert not STATE.debug  # reset after the command: the next command starts quiet again
    assert "Traceback" not in run("fail", "input").stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_on_a_gpu_less_machine_lists_available_devices(run) -> None:
    with pytest.raises(DeviceError, match=r"--device cuda: CUDA is not available on this machine \(available: cpu"):
        resolve_device("cuda")
    result = run("device", "--device", "cuda:1")
    assert result.exit_code == 1
    assert len(result.stderr.splitlines()) == 1
    assert "available: cpu" in result.stderr and "use --device cpu" in result.stderr


def test_device_names(run) -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda:0" if torch.cuda.is_available() else "cpu"
    assert run("device").stdout.strip() == expected  # auto
    with pytest.raises(DeviceError, match=r"--device 'tpu' is not a device name; use auto, cpu or cuda\[:N\]"):
        resolve_device("tpu")


def test_warn_is_one_literal_line(capsys: pytest.CaptureFixture[str]) -> None:
    warn("a:b:c.mrc: [red]7[/red] NaN values\nsecond")
    assert capsys.readouterr().err == "warning: a:b:c.mrc: [red]7[/red] NaN values second\n"
    setup(quiet=True)
    try:
        warn("hidden")
        assert capsys.readouterr().err == ""
    finally:
        STATE.quiet = False


def test_options_dict_makes_plain_values() -> None:
    from enum import Enum
    from pathlib import Path

    class Method(str, Enum):
        wbp = "wbp"

    class Mode(Enum):
        fast = 1

    out = options_dict(path=Path("a/b.mrc"), method=Method.wbp, mode=Mode.fast, paths=[Path("x"), 2], n=3)
    assert out == {"path": "a/b.mrc", "method": "wbp", "mode": 1, "paths": ["x", 2], "n": 3}


def test_parse_shape() -> None:
    assert parse_shape("64", "--shape") == (64, 64, 64)
    assert parse_shape("32,48,64", "--shape") == (32, 48, 64)
    assert parse_shape("32x48", "--size", ndim=2) == (32, 48)
    with pytest.raises(ParameterError, match=r"--shape 'a,b': expected integers"):
        parse_shape("a,b", "--shape")
    with pytest.raises(ParameterError, match=r"--shape '1,2': expected 3 positive integers"):
        parse_shape("1,2", "--shape")
    with pytest.raises(ParameterError, match="positive"):
        parse_shape("0", "--shape")


def test_progress_callback_counts(capsys: pytest.CaptureFixture[str]) -> None:
    """Not a TTY here, so the bar is disabled, but the callback must accept the documented arguments."""
    with progress("steps", total=3) as advance:
        advance()
        advance(2, total=4, status="loss 0.1")
    assert capsys.readouterr().out == ""

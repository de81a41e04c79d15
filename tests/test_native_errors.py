"""A failure inside a native library (a Rust panic: ``pyo3_runtime.PanicException`` derives from
``BaseException``) or a ``RecursionError`` from bad input is one line on the CLI and OpenAI-shaped JSON over
HTTP (issue 24, finding 4)."""

from __future__ import annotations

import pytest

import genforge.cli as cli

PANIC = type("PanicException", (BaseException,), {"__module__": "pyo3_runtime"})  # pyo3 exports no class


def _failing(monkeypatch, exc: BaseException) -> None:
    """``genforge recipes`` raises ``exc`` (the parser looks the command up when it is built)."""
    def run(args):
        raise exc

    monkeypatch.setattr(cli, "cmd_recipes", run)


@pytest.mark.parametrize("exc,code,text", [
    (PANIC("Onig: Regex search error\n  at src/lib.rs:1"), 1, "a native library failed: Onig: Regex search error"),
    (RecursionError("maximum recursion depth exceeded"), 2, "input nested too deeply: maximum recursion depth"),
])
def test_native_panics_and_recursion_are_one_line(monkeypatch, capsys, exc, code, text):
    monkeypatch.setenv("GENFORGE_DEBUG", "")
    _failing(monkeypatch, exc)
    assert cli.main(["recipes"]) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and text in err, err


def test_other_base_exceptions_still_pass_through(monkeypatch):
    monkeypatch.setenv("GENFORGE_DEBUG", "")
    other = type("Stop", (BaseException,), {})
    _failing(monkeypatch, other())
    with pytest.raises(other):
        cli.main(["recipes"])


def test_the_server_answers_a_panic_as_openai_json():
    pytest.importorskip("fastapi")
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from genforge.serve import errors

    counted = []
    app = FastAPI()
    errors.install(app, lambda request, status: counted.append(status))

    @app.get("/panic")
    def panic():
        raise PANIC("called `Result::unwrap()` on an `Err` value\nnote: run with RUST_BACKTRACE=1")

    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get("/panic")
    assert r.status_code == 500 and r.headers["content-type"].startswith("application/json")
    error = r.json()["error"]
    assert error["type"] == "server_error" and error["param"] is None
    assert error["message"].startswith("internal error: a native library failed: called `Result::unwrap()`")
    assert "\n" not in error["message"] and counted == [500]

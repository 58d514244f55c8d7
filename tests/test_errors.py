"""One error root: every error mimi raises for a user is a MimiError, which the CLI prints as one line."""
import importlib
import inspect
import pkgutil

import pytest
from typer.testing import CliRunner

import mimi_cli
from mimi_cli import cli
from mimi_cli.errors import MimiError

OPTIONAL = {"mimi_cli.ray_engine"}  # imports Ray only when run


def our_exception_classes():
    for module in pkgutil.walk_packages(mimi_cli.__path__, "mimi_cli."):
        try:
            loaded = importlib.import_module(module.name)
        except ImportError:
            if module.name in OPTIONAL or module.name.startswith("mimi_cli.serve"):
                continue
            raise
        for value in vars(loaded).values():
            if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == module.name:
                yield value


def test_every_error_we_define_is_a_mimi_error():
    found = list(our_exception_classes())
    assert len(found) >= 15
    # SIGTERM unwinds as Ctrl-C does, so it is a KeyboardInterrupt, not an error.
    strays = [c.__qualname__ for c in found if not issubclass(c, MimiError) and not issubclass(c, KeyboardInterrupt)]
    assert strays == []


@pytest.mark.parametrize("code", [1, 2])
def test_the_cli_turns_any_mimi_error_into_one_line_and_its_exit_code(monkeypatch, code):
    class BrandNew(MimiError):
        exit_code = code

    def boom(tokens):
        raise BrandNew("the dataset is made of cheese; give another")

    monkeypatch.setattr("mimi_cli.formats.info.dataset_info", boom)
    result = CliRunner().invoke(cli.app, ["info", "whatever.parquet"])
    assert result.exit_code == code
    assert "Traceback" not in result.output
    assert result.output.strip().splitlines()[-1] == "mimi: error: the dataset is made of cheese; give another"

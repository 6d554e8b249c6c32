"""The house's import direction and packaging: metacontroller_envs <- metacontroller_agents <-
benchmarks / experiments; the suite never imports torch or the agent, not even lazily; a
wheel holds the two packages and nothing else."""

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Folder -> (import name, layer). A module may import its own layer and those below.
LAYERS = {
    "metacontroller_envs": ("metacontroller_envs", 0),
    "agents": ("metacontroller_agents", 1),
    "benchmarks": ("benchmarks", 2),
    "experiments": ("experiments", 2),
}
LAYER_OF = {name: layer for name, layer in LAYERS.values()}
#: What the suite must never import, at any depth of a function.
SUITE_FORBIDDEN = {"torch", "stable_baselines3", "einops", "matplotlib", "agents"}


def imported_names(path: Path) -> list[tuple[int, str]]:
    """(line, top-level module) of every import in a file, function-level ones included."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append((node.lineno, node.module.split(".")[0]))
    return names


def sources() -> list[tuple[str, Path]]:
    return [(folder, path) for folder in LAYERS for path in sorted((ROOT / folder).rglob("*.py"))]


def test_imports_run_one_way():
    wrong = []
    for folder, path in sources():
        name, layer = LAYERS[folder]
        for line, module in imported_names(path):
            where = f"{path.relative_to(ROOT)}:{line} imports {module}"
            if module == "agents":
                wrong.append(f"{where} (the package is metacontroller_agents)")
            elif LAYER_OF.get(module, -1) > layer:
                wrong.append(f"{where} (a layer above {name})")
            elif layer == 0 and module in SUITE_FORBIDDEN:
                wrong.append(f"{where} (the suite never imports it)")
    assert not wrong, "imports against the house's direction:\n" + "\n".join(wrong)


def test_the_check_would_catch_a_wrong_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    import torch\n    from metacontroller_agents.bc import x\n")
    assert imported_names(bad) == [(2, "torch"), (3, "metacontroller_agents")]


def loaded_after(code: str) -> list[str]:
    """The optional packages a fresh interpreter has imported after running `code`."""
    probe = (
        "import sys\n"
        + code
        + (
            "\nprint([m for m in ('torch', 'minari', 'metacontroller_agents', 'imageio')"
            " if m in sys.modules])"
        )
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return ast.literal_eval(out.stdout.strip())


def test_importing_the_suite_loads_no_agent_torch_or_minari():
    code = "import gymnasium as gym, metacontroller_envs\ngym.make('PinPad-v0').reset(seed=0)"
    assert loaded_after(code) == []


def test_mcenv_play_parses_without_the_agent():
    code = (
        "from metacontroller_envs.cli import build_parser\n"
        "build_parser(['play']).parse_args(['play', 'PinPad-v0'])"
    )
    assert loaded_after(code) == []


def test_every_cli_target_names_a_function():
    import importlib

    from metacontroller_envs.cli import COMMANDS

    for name, command in COMMANDS.items():
        module, function = command.target.split(":")
        assert callable(getattr(importlib.import_module(module), function)), name


def test_the_wheel_holds_the_two_packages_only(tmp_path):
    """Builds a wheel (an isolated build: pip fetches setuptools) and lists its files."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path),
                    str(ROOT)], check=True)  # fmt: skip
    (wheel,) = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names if not name.split("/")[0].endswith("-info")}
    assert tops == {"metacontroller_envs", "metacontroller_agents"}
    expected = {
        f"{LAYERS[folder][0]}/{path.relative_to(ROOT / folder).as_posix()}"
        for folder, path in sources()
        if LAYERS[folder][1] < 2
    }
    assert expected <= set(names), sorted(expected - set(names))
    weights = {
        f"metacontroller_agents/weights/{p.name}" for p in (ROOT / "agents/weights").glob("*.pt")
    }
    assert weights and weights <= set(names)  # the pretrained agents are package data


def test_an_agent_command_without_its_extra_names_the_extra():
    code = (
        "import sys\nsys.modules['torch'] = None  # as if the agent extra were not installed\n"
        "from metacontroller_envs.cli import main\n"
        "sys.exit(main(['train', 'bc', '--help']))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 2, out.stderr
    assert "pip install 'metacontroller-envs[agent]'" in out.stderr
    assert "'torch'" in out.stderr

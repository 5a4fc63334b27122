"""The package's modules import in one direction: array ops and errors,
then the models, then data, training, evaluation and the other library
modules, then the command-line modules; none imports from a floor above
its own (read from the source with `ast`, imports inside functions
included)."""
import ast
import pathlib

from tests.helpers import ROOT

PACKAGE = pathlib.Path(ROOT) / "scnet_jax"
FLOORS = {
    0: ("errors", "ops", "progress", "config_lib"),
    1: ("models",),
    2: ("data", "training", "evaluation", "parallel", "checkpoint",
        "convert", "drawing"),
}
COMMANDS = ("convert.__main__",)  # `python -m scnet_jax.convert`


def _floor(module):
  """0-2 from FLOORS; 3 for the command-line modules and the package."""
  inner = module.split(".", 1)[1] if "." in module else ""
  if inner in COMMANDS:
    return 3
  top = inner.split(".")[0]
  return next((f for f, tops in FLOORS.items() if top in tops), 3)


def _imports(path):
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.ImportFrom) and node.module and \
        node.module.split(".")[0] == "scnet_jax":
      for alias in node.names:
        yield (f"scnet_jax.{alias.name}" if node.module == "scnet_jax"
               else node.module)
    elif isinstance(node, ast.Import):
      yield from (a.name for a in node.names
                  if a.name.split(".")[0] == "scnet_jax")


def test_no_module_imports_from_a_floor_above_its_own():
  upward, seen = [], 0
  for path in sorted(PACKAGE.rglob("*.py")):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    module = ".".join(p for p in parts if p != "__init__")
    for target in _imports(path):
      seen += 1
      if _floor(target) > _floor(module):
        upward.append(f"{module} -> {target}")
  assert seen > 200
  assert upward == []


def test_the_floors_name_every_library_module():
  """A new top-level module is placed on a floor, or is a command."""
  commands = {"cli", "commands", "predictor", "predict_images", "export",
              "summary", "visualize", "__init__"}
  placed = {t for tops in FLOORS.values() for t in tops}
  tops = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
          if (p.suffix == ".py" or (p / "__init__.py").exists())}
  assert tops == placed | commands

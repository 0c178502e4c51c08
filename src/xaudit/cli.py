"""The `xaudit` command line: a thin Typer app over the Python API."""

from __future__ import annotations

import errno
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from .errors import XauditError
from .safety import one_line

app = typer.Typer(
    name="xaudit",
    help=(
        "Train, explain and audit image classifiers from a YAML recipe.\n\n"
        "Examples:\n\n"
        "  xaudit demo                                  # synthetic bean leaves, offline\n\n"
        "  xaudit run configs/beans.yaml --set train.epochs=1\n\n"
        "  xaudit explain runs/demo --set explain.select.per_class=4\n\n"
        "  xaudit report runs/demo                      # re-render without recomputing\n\n"
        "  xaudit validate                              # the verdict on cases with known answers\n\n"
        "  xaudit list methods"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Dataset utilities.", no_args_is_help=True)
app.add_typer(data_app, name="data")

console = Console(stderr=True)
STATE = {"debug": False}

SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a recipe key, e.g. --set train.epochs=3 (repeatable)."),
]
TrustOption = Annotated[
    bool,
    typer.Option("--trust-code", help="Call the Python code the model's files name (a model.module "
                 "factory in a run folder's recipe.yaml or model.json, a transformers auto_map). "
                 "Only for folders you trust."),
]


@app.callback()
def main_callback(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
) -> None:
    STATE["debug"] = debug


def _run_pipeline(make, action) -> Path:
    from .cli_output import closing_block, reporter
    from .distributed import init_from_env

    t0 = time.perf_counter()
    world = init_from_env()  # under torchrun: join the job; otherwise one process
    if not world.is_main:  # rank 0 speaks for the job; the others work quietly
        return action(make())
    with reporter(console) as (progress, log):
        report = action(make(progress=progress, log=lambda m: log(one_line(m))))
    ranks = f" ({world.size} processes)" if world.size > 1 else ""
    for line in closing_block(Path(report).parent, time.perf_counter() - t0):
        console.print(line + (ranks if line.startswith("──") else ""), highlight=False,
                      markup=False, soft_wrap=True)
    return report


def _recipe_path(name: str) -> Path:
    """A recipe shipped inside the package (``importlib.resources``), e.g. ``demo.yaml``."""
    from importlib.resources import files

    shipped = files("xaudit") / "configs" / name
    if shipped.is_file():
        return Path(str(shipped))
    names = sorted(p.name for p in (files("xaudit") / "configs").iterdir() if p.name.endswith(".yaml"))
    raise XauditError(f"recipe {name[:60]!r} is neither a file nor a shipped recipe "
                      f"({', '.join(n.removesuffix('.yaml') for n in names)})")


@app.command()
def run(
    recipe: Annotated[Path, typer.Argument(help="YAML recipe (e.g. configs/demo.yaml), or a shipped recipe's name (beans).")],
    set_: SetOption = None,
    force: Annotated[bool, typer.Option("--force", help="Redo every stage, even finished ones.")] = False,
    trust_code: TrustOption = False,
) -> None:
    """Run every stage of RECIPE into runs/<name>/ (finished stages are kept on resume)."""
    from .config import load_recipe
    from .pipeline import Pipeline

    if not recipe.exists() and recipe.parent == Path(".") and not recipe.suffix:
        recipe = _recipe_path(f"{recipe.name}.yaml")
    r = load_recipe(recipe, set_ or [])
    # The recipe given here vouches for the factory it names; --trust-code for any other code.
    trust = True if trust_code else None
    _run_pipeline(lambda **kw: Pipeline(r, trust_code=trust, **kw), lambda p: p.run_stages(force=force))


@app.command()
def demo(
    set_: SetOption = None,
    shortcut: Annotated[bool, typer.Option("--shortcut", help="Run configs/demo-shortcut.yaml instead.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Redo every stage.")] = False,
) -> None:
    """Offline demo: synthetic bean leaves, MobileNetV2 with packaged ImageNet weights."""
    run(_recipe_path("demo-shortcut.yaml" if shortcut else "demo.yaml"), set_, force, False)


def _stage_command(stage: str, doc: str):
    def command(
        run_dir: Annotated[Path, typer.Argument(help="An existing run folder, e.g. runs/demo.")],
        set_: SetOption = None,
        trust_code: TrustOption = False,
    ) -> None:
        from .pipeline import Pipeline

        _run_pipeline(
            lambda **kw: Pipeline.from_run_dir(run_dir, set_ or [], trust_code, **kw),
            lambda p: p.run_one(stage),
        )

    command.__doc__ = doc
    command.__name__ = stage
    return command


for _stage, _doc in {
    "train": "Re-run training in RUN_DIR from its saved recipe.",
    "evaluate": "Re-run evaluation of the trained model in RUN_DIR.",
    "explain": "Re-run the explanations in RUN_DIR (e.g. with --set explain.methods=...).",
    "audit": "Run the explanation audits in RUN_DIR.",
}.items():
    app.command(name=_stage)(_stage_command(_stage, _doc))


@app.command()
def report(run_dir: Annotated[Path, typer.Argument(help="An existing run folder.")]) -> None:
    """Re-render RUN_DIR/report.html from stored results, without recomputing."""
    from .report import render_report
    from .run import RunDir

    path = render_report(RunDir(run_dir).require().root)
    console.print(f"[green]report[/green]: {path}")


@app.command()
def validate(
    size: Annotated[str, typer.Option("--size", help="small (about a minute) | full (minutes: more images and methods).")] = "small",
    out: Annotated[Path, typer.Option("--out", help="Folder for validate.json.")] = Path("runs/validate"),
    seed: Annotated[int, typer.Option(help="Random seed of every case.")] = 0,
) -> None:
    """Run the known-truth cases through the audits; print the verdict beside the truth.

    Exit 0 when every must holds, 1 otherwise: no control trusted, nothing faithful by construction called "do not trust", guided backprop never trusted."""  # noqa: E501 (one line, as --help wraps it)
    if size not in ("small", "full"):
        raise XauditError(f"--size: expected small or full, got {size[:40]!r}")
    from .truth import run_suite, save, table_lines

    result = run_suite(size, seed, log=lambda m: console.print(one_line(m), highlight=False,
                                                               markup=False, soft_wrap=True))
    typer.echo("\n".join(table_lines(result)))
    path = save(result, out)
    console.print(f"wrote {path}", highlight=False, markup=False, soft_wrap=True)
    if not result.musts_hold:
        raise typer.Exit(1)


@app.command(name="list")
def list_(
    what: Annotated[str, typer.Argument(help="methods | audits | models | sources")] = "methods",
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show kinds, costs and parameters.")] = False,
) -> None:
    """List the explanation methods, audits, models or data sources (answers without torch)."""
    from . import catalog

    if what == "methods":
        if not verbose:
            lines = list(catalog.METHODS)
        else:
            lines = []
            for name, (kind, params) in catalog.METHODS.items():
                shown = ", ".join(f"{k}={v!r}" for k, v in params.items()) or "no parameters"
                lines += [f"{name}  [{kind}]", f"    cost: {catalog.COST_BY_KIND.get(kind, kind)}",
                          f"    parameters: {shown}"]
    elif what == "audits":
        lines = [f"{n}  ({', '.join(f'{k}={v!r}' for k, v in p.items())})" if verbose else n
                 for n, p in catalog.AUDITS.items()]
    elif what == "models":
        lines = []
        for name in catalog.MODELS:
            offline = catalog.offline_weights(name)
            lines.append(f"{name:<24} weights offline: {offline}" if offline else
                         f"{name:<24} weights need a download (or weights: none)")
    elif what == "sources":
        lines = list(catalog.SOURCES)
    else:
        from .registry import did_you_mean

        kinds = ["methods", "audits", "models", "sources"]
        raise XauditError(f"unknown list {what[:40]!r}. Allowed: {', '.join(kinds)}."
                          f"{did_you_mean(what, kinds)}")
    typer.echo("\n".join(lines))


@data_app.command("synth")
def data_synth(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the dataset into.")],
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    n_train: Annotated[int, typer.Option(help="Training images per class.")] = 120,
    n_val: Annotated[int, typer.Option(help="Validation images per class.")] = 30,
    n_test: Annotated[int, typer.Option(help="Test images per class.")] = 40,
    size: Annotated[int, typer.Option(help="Image side in pixels.")] = 224,
    shortcut: Annotated[bool, typer.Option(help="Plant a class-coloured corner tag in train images.")] = False,
) -> None:
    """Write synthetic bean leaves as an ImageFolder with lesion and leaf masks."""
    from .config import SyntheticConfig
    from .data.synthetic import write_synthetic

    cfg = SyntheticConfig(n_train=n_train, n_val=n_val, n_test=n_test, image_size=size, shortcut=shortcut)
    path = write_synthetic(out, cfg, seed)
    console.print(f"[green]wrote[/green] {path} (use data.source: folder, data.path: {path}/images, data.masks: {path}/masks)")


def _command_word() -> str:
    """``xaudit run`` (or ``xaudit explain`` ...): the command that resumes this one."""
    words = [a for a in sys.argv[1:] if not a.startswith("-")]
    return f"xaudit {words[0]}" if words else "xaudit run"


_OUTPUT_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EROFS}  # writes only


def main() -> None:
    try:
        _main()
    finally:
        # Only a run imports torch and may have joined a process group; --help and list do not.
        distributed = sys.modules.get("xaudit.distributed")
        if distributed is not None:
            distributed.leave()


def _main() -> None:
    from .interrupts import Interrupted, handled, message

    try:
        try:
            with handled():
                app(standalone_mode=False)
        except OSError as err:
            # A full disk or read-only folder met outside xaudit's own atomic writes (a
            # figure saved by matplotlib, say): the same one line as for those.
            if STATE["debug"] or err.errno not in _OUTPUT_ERRNOS:
                raise
            from .run import output_error

            raise output_error(err.filename or "a file", err) from None
    except XauditError as err:
        if STATE["debug"]:
            raise
        console.print(f"error: {one_line(err)}", style="red", highlight=False, markup=False, soft_wrap=True)
        if err.hint:
            console.print(f"hint: {one_line(err.hint)}", highlight=False, markup=False, soft_wrap=True)
        sys.exit(2)
    except Interrupted as err:
        console.print(message(err, _command_word()), highlight=False, markup=False, soft_wrap=True)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        console.print("interrupted: finished stages and chunks are kept; run the same command to resume")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as err:  # click usage errors and unexpected failures
        if _is_click(err, "ClickException"):
            err.show()
            if _is_click(err, "NoSuchOption"):
                console.print("hint: recipe keys are set with --set KEY=VALUE, e.g. "
                              "--set train.epochs=3 (see `xaudit run --help`)",
                              highlight=False, markup=False, soft_wrap=True)
            sys.exit(err.exit_code)
        if _is_click(err, "Abort"):
            sys.exit(1)
        if STATE["debug"]:
            raise
        if _out_of_memory(err):
            _say_out_of_memory()
            sys.exit(1)
        console.print(
            f"error: {type(err).__name__}: {one_line(err)} (run with --debug for the traceback)",
            style="red", highlight=False, markup=False, soft_wrap=True,
        )
        sys.exit(1)


def _out_of_memory(err: BaseException) -> bool:
    """Host memory (MemoryError) or accelerator memory (torch's OutOfMemoryError) ran out."""
    return isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError"


def _say_out_of_memory() -> None:
    from .interrupts import current_stage

    stage = current_stage()
    where = f" during the {stage} stage" if stage else ""
    console.print(f"error: out of memory{where}: the images, batches or model are too large for "
                  "this machine", style="red", highlight=False, markup=False, soft_wrap=True)
    console.print("hint: lower model.image_size (the pixels per image grow with its square), "
                  "train.batch_size, evaluate.batch_size or explain.memory_budget_mb; finished "
                  "stages are kept", highlight=False, markup=False, soft_wrap=True)


def _is_click(err: BaseException, name: str) -> bool:
    """``err`` is click's exception ``name`` (typer raises those of its own copy of click)."""
    return any(cls.__name__ == name and cls.__module__.split(".")[0] in ("click", "typer")
               for cls in type(err).__mro__)


if __name__ == "__main__":
    main()

"""Warnings shown at the top of the report: what a reader must know before the numbers.

A duplicate across train and test (the scores overstate accuracy), classes dropped for
having no usable image, and stages that have not finished or are stale against the folder's
recipe.yaml: a report re-rendered after an interrupted, invalidated or edited stage would
otherwise show that stage's old results without a word.
"""

from __future__ import annotations

from ..run import STAGES, RunDir

_EXPECTED = tuple(s for s in STAGES if s != "report")  # the report is being rendered now


def unfinished_stages(run: RunDir) -> list[str]:
    try:
        done = run.manifest().get("stages", {})
    except (ValueError, OSError):
        return list(_EXPECTED)
    return [s for s in _EXPECTED if s not in done]


def stale_stages(run: RunDir) -> tuple[list[str], str]:
    """Finished stages whose recorded fingerprint is not the one the folder's recipe.yaml
    gives now (the recipe was edited, or a checkpoint it names changed), and why none could
    be checked when recipe.yaml does not load."""
    from ..errors import XauditError, shown
    from ..recipe import load_recipe, recipe_fingerprints

    try:
        done = run.manifest().get("stages", {})
        now = recipe_fingerprints(load_recipe(run.recipe_path))
    except (XauditError, ValueError, OSError) as err:
        return [], shown(str(err), 200)
    return [s for s in _EXPECTED if s in done and done[s].get("fingerprint") != now.get(s)], ""


def embeddable_figures(run: RunDir) -> tuple[list[str], list[str]]:
    """Figure names to embed, and why others are not: only plain files, never links.

    A run folder can come from someone else; a link in ``figures/`` would pull any local file
    the reader can open into a report that is then shared.
    """
    if not run.figures.is_dir():
        return [], []
    names, refused = [], []
    for p in sorted(run.figures.glob("*.png")):
        if p.is_symlink():
            refused.append(f"figures/{p.name} is a symbolic link")
        elif not p.is_file():
            refused.append(f"figures/{p.name} is not a regular file")
        else:
            names.append(p.name)
    return names, refused


def notices(run: RunDir, summary: dict) -> list[str]:
    out: list[str] = []
    missing = unfinished_stages(run)
    if missing:
        out.append(
            f"Not up to date: the {', '.join(missing)} stage{'s have' if len(missing) > 1 else ' has'} not "
            "finished (interrupted, or invalidated by a changed recipe). Results of "
            f"{'these stages' if len(missing) > 1 else 'that stage'} below are missing or from an earlier "
            "run; `xaudit run` with the run's recipe finishes them."
        )
    stale, unreadable = stale_stages(run)
    if stale:
        out.append(
            f"Stale: the {', '.join(stale)} stage{'s were' if len(stale) > 1 else ' was'} run with other "
            "settings than the run folder's recipe.yaml says now (edited since, or a checkpoint it "
            f"names changed): the results below are not that recipe's. `xaudit run` with the run's "
            f"recipe.yaml re-runs {'them' if len(stale) > 1 else 'it'}."
        )
    if unreadable:
        out.append(f"Not checked against its recipe: recipe.yaml does not load ({unreadable}).")
    info = (summary.get("dataset") or {}).get("info") or {}
    leakage = info.get("leakage") or {}
    if isinstance(leakage, dict) and leakage.get("pairs"):
        out.append(f"Leakage: {leakage.get('message') or str(leakage['pairs']) + ' duplicate pair(s) across splits'}")
    dropped = info.get("dropped_classes") or {}
    if isinstance(dropped, dict) and dropped.get("message"):
        out.append(f"Classes dropped: {dropped['message']}")
    return [str(n) for n in out]

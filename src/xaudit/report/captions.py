"""How the report shows a figure: one caption per figure (what to look for in it), and the
width a figure drawn at 2x is shown at."""

from __future__ import annotations

# What to look for in each figure, by file-name prefix (the longest matching prefix wins).
CAPTIONS = {
    "dataset_examples": "Training images with their class: check the classes look as expected.",
    "history": "Loss and accuracy per epoch: validation far below training means overfitting.",
    "confusion_matrix": "Rows are true classes, columns predictions: off-diagonal cells are errors.",
    "top_losses": "The test images the model got most wrong: look for label errors and hard cases.",
    "top_losses_maps": ("The same images with one method's map of the class the model predicted: "
                        "look for evidence off the object (background, borders, labels)."),
    "explain_": "One image, every method, for the class named in the title: where the methods "
                "agree, and where they do not. Red: positive evidence, blue: negative (signed row, "
                "for methods whose maps can be negative); a red title marks a wrong prediction.",
    "grid_": "One method on the images of one class: a map that looks the same on every image "
             "says more about the method than about the images.",
    "cvi_": "Maps of correct and of wrong predictions: wrong ones that look at the background "
            "point to a shortcut.",
    "audit_convergence": "Completeness error against integration steps: the configured setting "
                         "should sit below the tolerance line.",
    "audit_baseline_sensitivity": "Agreement of the maps between baselines: low values mean the "
                                  "map depends on the chosen baseline.",
    "audit_model_randomization": "Each method's similarity to its trained-model map as layers "
                                 "are randomized: it should fall to the random-pair level "
                                 "(dotted); the black bars are the rules' yardsticks for "
                                 "Spearman(|map|), compared image by image (their mean is drawn).",
    "audit_label_randomization": "Maps of the model trained on shuffled labels: they should not "
                                 "resemble the real model's.",
    "audit_faithfulness": "Top: score as the most relevant pixels are removed (deletion, lower "
                          "is better) or added (insertion, higher is better); bottom: ROAD, "
                          "removing the most (MoRF) and least (LeRF) relevant pixels first, a "
                          "larger gap is more faithful.",
    "audit_faithfulness_deletion": "Score as the most relevant pixels are removed (deletion, "
                                   "lower is better) or added (insertion, higher is better).",
    "audit_faithfulness_road": "ROAD: score after removing the most (MoRF) and least (LeRF) "
                               "relevant pixels; a larger gap is more faithful.",
    "audit_localization": "Maps with the evidence mask outlined: mass inside the outline is "
                          "what localization measures (the explorer shows every scored image).",
    "audit_shortcut": "Share of the map in each image region (one colour per region): a bar "
                      "above its black tick, hatched red, flags a possible shortcut.",
    "audit_cam_layers": "Deletion AUC of each CAM method at its default layer (first) and the "
                        "blocks below it, with 95% intervals: a lower bar is a more faithful "
                        "layer; the text says whether one is shown better than the default.",
    "audit_correctness": "Map statistics of correct and of wrong predictions side by side, with "
                         "95% intervals: overlapping intervals are no evidence of a difference.",
}


def caption_of(name: str) -> str:
    hits = [p for p in CAPTIONS if name.startswith(p)]
    return CAPTIONS[max(hits, key=len)] if hits else ""


def display_width(png: bytes) -> int | None:
    """The CSS width of a figure drawn at 2x (or more): its pixels over the scale its pHYs
    chunk records (100 px per inch is 1x), so its text shows at the size it was drawn for;
    None (natural size) for a figure at 1x or without a recorded resolution."""
    if png[:8] != b"\x89PNG\r\n\x1a\n" or len(png) < 24:
        return None
    width = int.from_bytes(png[16:20], "big")
    pos = 8
    while pos + 8 <= len(png):
        size, kind = int.from_bytes(png[pos:pos + 4], "big"), png[pos + 4:pos + 8]
        if kind == b"pHYs" and size == 9 and png[pos + 16] == 1:  # unit: metre
            scale = round(int.from_bytes(png[pos + 8:pos + 12], "big") * 0.0254 / 100)
            return width // scale if scale >= 2 else None
        if kind in (b"IDAT", b"IEND"):
            return None
        pos += 12 + size
    return None

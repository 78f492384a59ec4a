"""Right and wrong captions from the studio's ground truth, for judging the judges."""

from pathlib import Path

from clood_candy_plugins.prep.decode import read_exif
from PIL import Image

from clood_candy.captions.render import Chosen, render
from clood_candy.records import Photo

LIGHTING = {"daylight": "daylight", "indoor": "warm indoor light", "night": "flash"}
FRAMING = {"macro": "macro close-up", "medium": "medium shot", "wide": "wide shot"}
SWAP_BACKGROUND = {"white": "wood", "wood": "white", "cloth": "wood"}
OTHER_COLOURS = ["blue", "green", "yellow", "red", "orange", "purple", "pink", "white", "black", "brown"]


def photo_for(root: Path, rel: str) -> Photo:
    path = root / rel
    with Image.open(path) as im:
        exif, _ = read_exif(im)
        size = im.size
    parts = rel.split("/")
    return Photo(id=Path(rel).stem, source=rel, image=str(path), original=str(path), width=size[0], height=size[1],
                 exif=exif, folders=parts[:-1])


def right_caption(labels) -> Chosen:
    background = labels.background if labels.background != "cloth" else f"{labels.background_colour} cloth"
    return Chosen(colours=list(labels.colours), count=labels.count, arrangement=labels.arrangement,
                  background=background, lighting=LIGHTING[labels.lighting], framing=FRAMING[labels.zoom])


def wrong_versions(labels, right: Chosen) -> dict[str, str]:
    """One caption per kind of mistake a captioner makes."""
    t = dict(trigger="jlybn", class_word="jellybean")
    good = render(right, "tags", **t)
    wrong_colour = Chosen(**{**right.__dict__, "colours": [next(c for c in OTHER_COLOURS if c not in labels.colours)]})
    wrong_background = Chosen(**{**right.__dict__, "background": SWAP_BACKGROUND[labels.background]})
    if labels.lighting == "night":
        contradiction = Chosen(**{**right.__dict__, "lighting": "daylight"})
    else:
        contradiction = Chosen(**{**right.__dict__, "time_of_day": "night"})
    return {
        "wrong colour": render(wrong_colour, "tags", **t),
        "wrong background": render(wrong_background, "tags", **t),
        "missing trigger": good.replace("jlybn, ", "", 1),
        "subject features": good + ", glossy, bean-shaped",
        "generic": "jlybn, a photo",
        "contradicts EXIF/folders": render(contradiction, "tags", **t),
    }


def studio_pairs(root: Path, count: int = 32, seed: int = 0) -> list:
    """Right-against-wrong caption pairs for studio shots, one per wrong kind; item ids are
    "<shot>|<kind>", the right caption is fighter "right"."""
    from clood_candy.records import Candidate, FightItem
    from clood_candy.studio import render_studio

    items = []
    for shot in render_studio(root, count=count, seed=seed):
        photo = photo_for(root, shot.path)
        right = render(right_caption(shot.labels), "tags", trigger="jlybn", class_word="jellybean")
        for kind, wrong in wrong_versions(shot.labels, right_caption(shot.labels)).items():
            items.append(FightItem(id=f"{shot.path}|{kind}", photo=photo, candidates=[
                Candidate(fighter="right", text=right), Candidate(fighter="wrong", text=wrong)]))
    return items

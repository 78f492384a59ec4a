"""The plan: settings chosen from the dataset size, base and device, each with its reason;
the user's own setting wins and is marked; the memory ladder in its order."""

import pytest

from clood_candy.config import DEMO_OVERRIDES, load_config
from clood_candy.plan.build import make_plan
from clood_candy.plan.fight import plan_fight
from clood_candy.plan.memory import GB
from clood_candy.plan.records import DeviceInfo, ModelSize, TrainingDefaults
from clood_candy.stages import ModelFamily

CPU = DeviceInfo(kind="cpu", name="test CPU", memory_bytes=64 * GB)


class SizedFamily(ModelFamily):
    """A family that answers the plan's questions with fixed numbers (SD1.5-like)."""

    name = "sized"

    def __init__(self, activations: int = 400_000_000, checkpointed: int = 40_000_000):
        self.activations, self.checkpointed = activations, checkpointed

    def matches(self, base):
        return True

    def load(self, base, ctx):
        raise AssertionError("the plan must not load a model")

    def train(self, *args, **kwargs):
        raise AssertionError

    def generate(self, *args, **kwargs):
        raise AssertionError

    def training_defaults(self, config):
        return TrainingDefaults(learning_rate=1e-4, rank=8, alpha=8.0, batch_size=4, resolution=512,
                                source="seed 004: test family")

    def model_size(self, config, recipe, resolution):
        return ModelSize(denoiser_params=860_000_000, text_encoder_params=123_000_000, vae_params=84_000_000,
                         weight_bytes=2, trainable_params=3_000_000, activation_elements=self.activations,
                         checkpointed_elements=self.checkpointed)


def plan(photos, family=None, device=CPU, **overrides):
    return make_plan(load_config(None, overrides), family or SizedFamily(), device, photos=photos)


def choice(made, field):
    return next(c for c in made.choices if c.key == f"train.defaults.{field}")


def test_the_steps_follow_the_dataset_size():
    # 50 photos: 40 train, 10 validate; batch 4 → 22 × 40 / 4 = 220, raised to the 500 floor
    small, large = plan(50, train={"defaults": {"batch_size": 1}}), plan(100, train={"defaults": {"batch_size": 1}})
    assert small.training_photos == 40 and small.value("train.defaults.steps") == 22 * 40
    assert large.value("train.defaults.steps") == 22 * 80
    assert "22 repeats × 40 training photos ÷ batch 1" in choice(small, "steps").reason
    assert "seed 002" in choice(small, "steps").reason
    floored = plan(20)
    assert floored.value("train.defaults.steps") == 500 and "raised to 500" in choice(floored, "steps").reason


def test_repeats_per_image_is_the_users_to_set():
    made = plan(50, train={"repeats_per_image": 10, "defaults": {"batch_size": 1}})
    assert made.value("train.defaults.steps") == 500  # 10 × 40 = 400, floored
    assert "you set train.repeats_per_image" in choice(made, "steps").reason


def test_an_explicit_setting_wins_and_is_marked():
    made = plan(50, train={"defaults": {"steps": 300, "learning_rate": 3e-4}})
    steps, lr = choice(made, "steps"), choice(made, "learning_rate")
    assert steps.value == 300 and steps.set_by_user and "you set this" in steps.reason
    assert "the plan would choose" in steps.reason
    assert lr.value == 3e-4 and lr.set_by_user
    assert not choice(made, "rank").set_by_user
    assert "steps" not in made.train_updates() and made.train_updates()["rank"] == 8


def test_defaults_come_from_the_family_and_the_seeds():
    made = plan(30)
    assert made.value("train.defaults.learning_rate") == 1e-4 and "seed 004" in choice(made, "learning_rate").reason
    assert made.value("train.defaults.lr_scheduler") == "cosine"
    assert made.value("train.defaults.warmup_steps") > 0
    assert made.value("train.defaults.mixed_precision") == "no"  # the CPU
    assert made.value("train.defaults.checkpoint_every") <= made.value("train.defaults.steps") // 5


def test_precision_follows_the_device():
    ampere = DeviceInfo(kind="cuda", name="A", memory_bytes=80 * GB, bf16=True, fp16=True)
    turing = DeviceInfo(kind="cuda", name="T", memory_bytes=80 * GB, fp16=True)
    assert plan(30, device=ampere).value("train.defaults.mixed_precision") == "bf16"
    older = plan(30, device=turing)
    assert older.value("train.defaults.mixed_precision") == "fp16"
    assert "loss scaling" in choice(older, "mixed_precision").reason


@pytest.mark.parametrize("photos, lora_type, words", [
    (5, "object", "at least 15"), (12, "style", "at least 30"), (60, "object", "beyond 40"),
    (250, "style", "beyond 200")])
def test_a_dataset_outside_the_seeds_sizes_warns(photos, lora_type, words):
    made = plan(photos, caption={"lora_type": lora_type})
    assert any(words in w and lora_type in w for w in made.warnings), made.warnings


def test_a_dataset_in_range_does_not_warn():
    assert plan(30).warnings == []


def test_photos_below_the_resolution_are_named():
    made = make_plan(load_config(None, {}), SizedFamily(), CPU, photos=30,
                     sizes={"big.jpg": (4000, 3000), "small.jpg": (400, 300), "tiny.png": (150, 110)})
    [warning] = made.warnings
    assert "2 photo(s) smaller than 512" in warning and "small.jpg (400×300)" in warning and "tiny.png" in warning
    assert "big.jpg" not in warning


def test_the_memory_remedies_fire_in_order_when_the_gpu_is_small():
    gpu = DeviceInfo(kind="cuda", name="small", memory_bytes=6 * GB, bf16=True, fp16=True, eight_bit_adam=True)
    made = plan(50, SizedFamily(activations=2_000_000_000, checkpointed=900_000_000), gpu)
    steps = [r.step.split(":")[0] for r in made.remedies]
    assert steps == ["gradient checkpointing", "8-bit AdamW", "batch 2 × gradient accumulation 2",
                     "batch 1 × gradient accumulation 4"]
    assert [r.fits for r in made.remedies] == [False, False, False, True]
    assert made.value("train.defaults.gradient_checkpointing") is True
    assert made.value("train.defaults.optimizer") == "adamw8bit"
    assert made.value("train.defaults.batch_size") == 1 and made.value("train.defaults.gradient_accumulation") == 4
    # the same photos per optimizer step, so the steps do not change with the remedy
    assert made.value("train.defaults.steps") == 500 and made.memory.fits


def test_no_remedy_when_it_fits_and_none_over_the_users_choice():
    roomy = DeviceInfo(kind="cuda", name="big", memory_bytes=80 * GB, bf16=True, fp16=True, eight_bit_adam=True)
    assert plan(50, device=roomy).remedies == []
    gpu = DeviceInfo(kind="cuda", name="small", memory_bytes=6 * GB, bf16=True, fp16=True, eight_bit_adam=False)
    made = plan(50, SizedFamily(activations=2_000_000_000, checkpointed=900_000_000), gpu,
                train={"defaults": {"gradient_checkpointing": False, "batch_size": 4}})
    assert made.remedies == []
    assert any("you set gradient_checkpointing = false" in n for n in made.notes)
    assert any("bitsandbytes" in n for n in made.notes)
    assert any("you set batch_size = 4" in n for n in made.notes)
    assert any("still exceeds" in n for n in made.notes)


def test_the_fights_rungs_are_shares_of_the_planned_steps():
    fight = plan_fight(880, configs=4, reduction=2, rungs=[0.125, 0.25, 0.5], max_cost=1.0, budgets=None)
    assert fight.budgets == [110, 220] and fight.rounds == [(4, 110), (2, 220)]
    assert fight.cost == 4 * 110 + 2 * 110 and fight.cost <= fight.limit == 880
    many = plan_fight(880, configs=8, reduction=2, rungs=[0.125, 0.25, 0.5], max_cost=1.0, budgets=None)
    assert many.cost <= 880 and "scaled" in many.reason
    mine = plan_fight(880, configs=4, reduction=2, rungs=[0.125], max_cost=1.0, budgets=[20, 40])
    assert mine.set_by_user and mine.budgets == [20, 40] and mine.cost == 4 * 20 + 2 * 20


def test_the_plan_states_the_fight_and_its_cost():
    made = plan(50, train={"defaults": {"batch_size": 1}})
    assert made.fight.budgets == [110, 220] and made.fight.cost == 660
    one = plan(50, train={"fight": {"configs": [{"name": "only"}]}})
    assert one.fight is None


def test_the_demo_keeps_its_own_settings():
    made = make_plan(load_config(None, layers=[DEMO_OVERRIDES]), SizedFamily(), CPU, photos=32)
    for field, value in [("steps", 80), ("rank", 4), ("learning_rate", 3e-3), ("batch_size", 2),
                         ("lr_scheduler", "constant"), ("checkpoint_every", 40), ("validate_every", 10)]:
        assert choice(made, field).value == value and choice(made, field).set_by_user, field
    assert made.value("train.defaults.warmup_steps") == 0
    assert made.fight.budgets == [20, 40] and made.fight.set_by_user
    assert made.value("prep.resolution") == 64


def test_the_plan_states_what_the_pick_fight_costs():
    from clood_candy.plan.render import render as render_plan

    made = plan(30)  # 500 steps, ten checkpoints, batch 4: 4 candidates × (2 held-out + 2 novel) prompts
    pick = made.pick
    assert (pick.candidates, pick.samples, pick.sampler_steps) == (4, 16, 25)
    # Four configs: the second round's two survivors are judged on the same prompts.
    assert [n for n, _ in made.fight.rounds] == [4, 2] and pick.rung_samples == 2 * 4
    assert pick.step_equivalents == round((16 + 8) * 25 * 2 / (3 * 4))
    assert pick.share < 0.25  # the budget: sampling at most a quarter of the run
    lines = render_plan(made)
    assert any(line.startswith("Pick fight: 4 candidate(s)") and "8 more for the fight's rounds" in line for line in lines)
    by_loss = plan(30, train={"fight": {"judge": "validation-loss"}}).pick
    assert by_loss.rung_samples == 0 and by_loss.step_equivalents == round(16 * 25 * 2 / (3 * 4))
    off = plan(30, train={"pick": {"enabled": False}})
    assert not any(line.startswith("Pick fight") for line in render_plan(off))

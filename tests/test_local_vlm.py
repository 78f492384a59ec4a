"""The local-vlm captioner on a tiny random BLIP built offline (same classes as the real
Salesforce/blip-image-captioning-base, a few kilobytes of weights)."""


import pytest
from PIL import Image

from clood_candy.records import Photo

WORDS = ["a", "red", "green", "blue", "yellow", "jellybean", "on", "white", "table", "candy", "pile", "of",
         "the", "photo", "close", "up", "wood", "bowl"]
COLOURS = [(200, 20, 20), (20, 200, 20), (20, 20, 200), (250, 250, 250), (0, 0, 0)]


@pytest.fixture(scope="module")
def tiny_blip(tmp_path_factory):
    """A BlipForConditionalGeneration + BlipProcessor (BertTokenizer from our own vocab.txt)."""
    import torch
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    folder = tmp_path_factory.mktemp("tiny-blip")
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", *WORDS]) + "\n")
    tokenizer = BertTokenizer(str(folder / "vocab.txt"), bos_token="[DEC]")
    processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tokenizer)
    # initializer_range 0.2 (not 0.02) so that different images give different words,
    # which lets the tests see each caption belongs to its own image.
    small = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
             "initializer_range": 0.2}
    config = BlipConfig(
        text_config={**small, "vocab_size": len(tokenizer), "max_position_embeddings": 64,
                     "bos_token_id": tokenizer.convert_tokens_to_ids("[DEC]"), "pad_token_id": 0,
                     "sep_token_id": 3, "eos_token_id": 3},
        vision_config={**small, "image_size": 32, "patch_size": 8}, projection_dim=32, initializer_range=0.2)
    torch.manual_seed(0)
    BlipForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture
def vlm(make_ctx, tiny_blip):
    def make(**options):
        opts = {"model": str(tiny_blip), "num_beams": 1, "max_new_tokens": 6, "min_new_tokens": 3, **options}
        ctx = make_ctx(plugins={"local-vlm": opts})
        return ctx.registry.get("captioner", "local-vlm"), ctx

    return make


def photos_in(run_root, colours=COLOURS):
    photos = []
    for i, rgb in enumerate(colours):
        path = run_root / "prep" / f"p{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (48, 40), rgb).save(path)
        photos.append(Photo(id=f"p{i}", source=f"p{i}.jpg", image=f"prep/p{i}.png", width=48, height=40))
    return photos


def test_batch_of_photos_is_captioned_through_the_real_code_path(vlm):
    captioner, ctx = vlm(batch_size=2)
    assert captioner.unavailable(ctx) is None
    photos = photos_in(ctx.run.root)
    results = captioner.caption(photos, ctx)

    assert list(results) == [p.id for p in photos]
    for result in results.values():
        assert result.error is None and result.facts is None
        assert set(result.caption.split()) <= set(WORDS)  # words of our vocabulary, decoded
        assert result.details["device"] == "cpu" and result.details["dtype"] == "float32"
    assert [r.usage["batch_size"] for r in results.values()] == [2, 2, 2, 2, 1]
    assert len({r.caption for r in results.values()}) >= 3  # captions follow their images


def test_batching_keeps_each_caption_with_its_photo(vlm):
    captioner, ctx = vlm(batch_size=1)
    one_by_one = captioner.caption(photos_in(ctx.run.root), ctx)
    captioner, ctx = vlm(batch_size=5)
    batched = captioner.caption(photos_in(ctx.run.root), ctx)
    assert {k: r.caption for k, r in batched.items()} == {k: r.caption for k, r in one_by_one.items()}


def test_a_broken_image_fails_alone(vlm):
    captioner, ctx = vlm(batch_size=4)
    photos = photos_in(ctx.run.root, COLOURS[:3])
    ctx.run.path("prep", "p1.png").write_bytes(b"")  # a zero-byte file, as real folders have
    results = captioner.caption(photos, ctx)
    assert "cannot read image" in results["p1"].error and results["p1"].caption is None
    assert results["p0"].caption and results["p2"].caption


def test_blip_prompt_conditions_the_caption(vlm):
    captioner, ctx = vlm(prompt="a photo of")
    results = captioner.caption(photos_in(ctx.run.root, COLOURS[:2]), ctx)
    assert all(r.caption.startswith("a photo of") for r in results.values())


def test_missing_model_is_reported_offline_in_one_line_without_touching_the_network(make_ctx, monkeypatch,
                                                                                    network_attempts):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ctx = make_ctx(plugins={"local-vlm": {"model": "clood-candy-tests/no-such-captioner"}})
    captioner = ctx.registry.get("captioner", "local-vlm")
    reason = captioner.unavailable(ctx)
    assert network_attempts == []
    assert "not in the Hugging Face cache" in reason and "HF_HUB_OFFLINE" in reason and "\n" not in reason
    photo = photos_in(ctx.run.root, COLOURS[:1])
    assert captioner.caption(photo, ctx)["p0"].error == reason  # every photo marked, none missing


def test_missing_model_online_is_one_short_probe_not_a_download_with_retries(make_ctx, monkeypatch):
    from huggingface_hub import HfApi

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    probes = []

    def model_info(self, repo_id, **kwargs):  # the hub as an offline machine sees it
        probes.append((repo_id, kwargs.get("timeout")))
        raise ConnectionError("no route to huggingface.co")

    monkeypatch.setattr(HfApi, "model_info", model_info)
    ctx = make_ctx(plugins={"local-vlm": {"model": "clood-candy-tests/no-such-captioner"}})
    reason = ctx.registry.get("captioner", "local-vlm").unavailable(ctx)
    # One question with a short timeout (hf_hub_download's own retries take ~25 s here).
    assert probes == [("clood-candy-tests/no-such-captioner", 5)]
    assert reason and "not cached" in reason and "\n" not in reason


def test_local_folder_without_config_is_reported(make_ctx, tmp_path):
    ctx = make_ctx(plugins={"local-vlm": {"model": str(tmp_path)}})
    assert "no config.json" in ctx.registry.get("captioner", "local-vlm").unavailable(ctx)


def test_unknown_option_is_reported(make_ctx):
    ctx = make_ctx(plugins={"local-vlm": {"beams": 3}})
    assert "beams" in ctx.registry.get("captioner", "local-vlm").unavailable(ctx)


@pytest.fixture(scope="module")
def tiny_florence(tmp_path_factory):
    """A natively converted Florence-2 (Florence2ForConditionalGeneration + Florence2Processor)
    with a byte-level BART tokenizer from our own vocab.json; the folder name carries
    "florence", as hub ids do."""
    import json

    import torch
    from transformers import (
        BartTokenizer,
        Florence2Config,
        Florence2ForConditionalGeneration,
        Florence2Processor,
    )
    from transformers.convert_slow_tokenizer import bytes_to_unicode
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    folder = tmp_path_factory.mktemp("models") / "tiny-florence-2"
    folder.mkdir()
    words = ["Ġred", "Ġgreen", "Ġjellybean", "Ġon", "Ġwhite", "Ġtable"]
    vocab = ["<s>", "<pad>", "</s>", "<unk>", *bytes_to_unicode().values(), *words]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2")  # no trailing newline (see shared notes)
    tokenizer = BartTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"),
                              extra_special_tokens={"image_token": "<image>"})
    images = CLIPImageProcessorPil(size={"height": 32, "width": 32}, do_center_crop=False)
    images.image_seq_length = 17  # 4×4 patches after two stages, plus the pooled token
    processor = Florence2Processor(image_processor=images, tokenizer=tokenizer, post_processor_config={"pure_text": {}})
    text = {"model_type": "bart", "d_model": 32, "encoder_layers": 1, "decoder_layers": 1,
            "encoder_attention_heads": 2, "decoder_attention_heads": 2, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64,
            "vocab_size": len(tokenizer), "max_position_embeddings": 128, "bos_token_id": 0, "pad_token_id": 1,
            "eos_token_id": 2, "decoder_start_token_id": 2, "forced_bos_token_id": 0}
    vision = {"depths": [1, 1], "patch_size": [7, 3], "patch_stride": [4, 2], "patch_padding": [3, 1],
              "patch_prenorm": [False, True], "embed_dim": [16, 32], "num_heads": [2, 2], "num_groups": [2, 2],
              "window_size": 2, "projection_dim": 32}
    torch.manual_seed(0)
    model = Florence2ForConditionalGeneration(
        Florence2Config(text_config=text, vision_config=vision, image_token_id=tokenizer.image_token_id))
    # Random weights would emit stray bytes (not valid UTF-8): let it say only whole words.
    keep = set(tokenizer.convert_tokens_to_ids(words)) | {tokenizer.eos_token_id}
    model.generation_config.suppress_tokens = [i for i in range(len(tokenizer)) if i not in keep]
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_florence_class_model_captions_through_its_task_prompt(make_ctx, tiny_florence):
    ctx = make_ctx(plugins={"local-vlm": {"model": str(tiny_florence), "num_beams": 1, "max_new_tokens": 5,
                                          "min_new_tokens": 2, "batch_size": 2}})
    captioner = ctx.registry.get("captioner", "local-vlm")
    assert captioner.unavailable(ctx) is None
    results = captioner.caption(photos_in(ctx.run.root, COLOURS[:3]), ctx)
    for result in results.values():
        assert result.error is None and result.facts is None
        # post-processing removed the task's special tokens; what is left is our words
        assert result.caption and set(result.caption.split()) <= {"red", "green", "jellybean", "on", "white", "table"}


@pytest.fixture
def florence_with_its_own_code(tiny_florence, tmp_path):
    """The tiny Florence-2 laid out as Microsoft's repos are: config.json's auto_map points at
    modelling code shipped in the folder. That code, if ever imported, leaves a marker."""
    import json
    import shutil

    folder = tmp_path / "remote-florence-2"
    shutil.copytree(tiny_florence, folder)
    marker = tmp_path / "remote-code-ran"
    for module in ("configuration_florence2", "modeling_florence2"):
        (folder / f"{module}.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "configuration_florence2.Florence2Config",
                          "AutoModelForCausalLM": "modeling_florence2.Florence2ForConditionalGeneration"}
    (folder / "config.json").write_text(json.dumps(config))
    return folder, marker


def test_a_model_that_ships_its_own_code_is_refused_until_the_user_trusts_it(make_ctx, florence_with_its_own_code):
    folder, marker = florence_with_its_own_code
    ctx = make_ctx(plugins={"local-vlm": {"model": str(folder)}})
    captioner = ctx.registry.get("captioner", "local-vlm")
    reason = captioner.unavailable(ctx)
    assert reason and "\n" not in reason
    assert f"set trust_remote_code = true under [plugins.local-vlm] if you trust {folder}" in reason
    results = captioner.caption(photos_in(ctx.run.root, COLOURS[:2]), ctx)
    assert all("set trust_remote_code = true" in r.error for r in results.values())
    assert not marker.exists()  # not a line of the repo's code ran


def test_trusting_remote_code_is_an_option_the_user_sets(make_ctx, florence_with_its_own_code):
    folder, _ = florence_with_its_own_code
    ctx = make_ctx(plugins={"local-vlm": {"model": str(folder), "trust_remote_code": True}})
    assert ctx.registry.get("captioner", "local-vlm").unavailable(ctx) is None


def test_a_converted_florence_captions_whether_or_not_remote_code_is_trusted(make_ctx, tiny_florence):
    for trusted in (False, True):
        ctx = make_ctx(plugins={"local-vlm": {"model": str(tiny_florence), "num_beams": 1, "max_new_tokens": 4,
                                              "min_new_tokens": 2, "trust_remote_code": trusted}})
        captioner = ctx.registry.get("captioner", "local-vlm")
        assert captioner.unavailable(ctx) is None
        results = captioner.caption(photos_in(ctx.run.root, COLOURS[:1]), ctx)
        assert results["p0"].error is None and results["p0"].caption


CHAT_TEMPLATE = ("{% for m in messages %}{% if m['role'] == 'system' %}{{ m['content'] }} {% else %}USER: "
                 "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image> {% else %}{{ c['text'] }} "
                 "{% endif %}{% endfor %}{% endif %}{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}")


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory):
    """A LlavaForConditionalGeneration (tiny CLIP vision tower + tiny Llama) with a LlavaProcessor
    and a chat template: the classes JoyCaption and llava-hf checkpoints load as."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor, PreTrainedTokenizerFast)

    folder = tmp_path_factory.mktemp("tiny-chat-vlm")
    vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", "<s>", "</s>", "<image>", "USER:", "ASSISTANT:", *WORDS])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                        unk_token="<unk>", extra_special_tokens={"image_token": "<image>"})
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor = LlavaProcessor(image_processor=images, tokenizer=tokenizer, patch_size=8,
                               vision_feature_select_strategy="default", chat_template=CHAT_TEMPLATE,
                               num_additional_image_tokens=1)
    small = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
             "initializer_range": 0.2}
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(**small, image_size=32, patch_size=8),
        text_config=LlamaConfig(**small, vocab_size=len(vocab), num_key_value_heads=2, max_position_embeddings=256,
                                bos_token_id=2, eos_token_id=3, pad_token_id=0),
        image_token_index=vocab["<image>"], vision_feature_select_strategy="default", vision_feature_layer=-1)
    torch.manual_seed(0)
    LlavaForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def chat_vlm(make_ctx, folder, **options):
    # An instruction in the tiny vocabulary: a prompt of unknown words has the random model answer <unk>.
    opts = {"model": str(folder), "max_new_tokens": 6, "min_new_tokens": 3, "prompt": "a photo of the candy", **options}
    ctx = make_ctx(plugins={"local-vlm": opts})
    return ctx.registry.get("captioner", "local-vlm"), ctx


def test_llava_class_model_captions_through_its_chat_template(make_ctx, tiny_llava):
    captioner, ctx = chat_vlm(make_ctx, tiny_llava, temperature=0, batch_size=2)
    assert captioner.unavailable(ctx) is None
    results = captioner.caption(photos_in(ctx.run.root), ctx)

    for result in results.values():
        assert result.error is None, result.error
        assert set(result.caption.split()) <= set(WORDS)  # only the answer: the prompt is cut off
        assert result.details["family"] == "chat" and result.details["do_sample"] is False
    assert len({r.caption for r in results.values()}) >= 3  # captions follow their images
    one_by_one = captioner.caption(photos_in(ctx.run.root), chat_vlm(make_ctx, tiny_llava, temperature=0,
                                                                     batch_size=1)[1])
    assert {k: r.caption for k, r in one_by_one.items()} == {k: r.caption for k, r in results.items()}


def test_chat_vlm_samples_at_the_guides_settings_and_a_rerun_gives_the_same_captions(make_ctx, tiny_llava):
    captioner, ctx = chat_vlm(make_ctx, tiny_llava, max_new_tokens=8)
    first = captioner.caption(photos_in(ctx.run.root), ctx)
    again = captioner.caption(photos_in(ctx.run.root), ctx)
    greedy = captioner.caption(photos_in(ctx.run.root), chat_vlm(make_ctx, tiny_llava, max_new_tokens=8,
                                                                 temperature=0)[1])

    settings = next(iter(first.values())).details
    assert (settings["do_sample"], settings["temperature"], settings["top_p"]) == (True, 0.7, 0.9)
    assert [r.caption for r in first.values()] == [r.caption for r in again.values()]
    assert [r.caption for r in first.values()] != [r.caption for r in greedy.values()]


def test_the_instruction_and_system_message_reach_the_model(make_ctx, tiny_llava):
    plain = chat_vlm(make_ctx, tiny_llava, temperature=0)
    asked = chat_vlm(make_ctx, tiny_llava, temperature=0, prompt="the red jellybean pile on wood",
                     system="a photo of candy")
    captions = [{k: r.caption for k, r in c.caption(photos_in(x.run.root), x).items()} for c, x in (plain, asked)]
    assert captions[0] != captions[1]


@pytest.mark.parametrize("model, family", [
    ("Salesforce/blip-image-captioning-large", "blip"), ("microsoft/Florence-2-large", "florence"),
    ("fancyfeast/llama-joycaption-beta-one-hf-llava", "chat"), ("llava-hf/llava-1.5-7b-hf", "chat"),
    ("Qwen/Qwen2-VL-2B-Instruct", "chat")])
def test_the_family_is_told_from_the_hub_id(model, family):
    from clood_candy_plugins.captioners.local_vlm import LocalVlmOptions

    opts = LocalVlmOptions(model=model)
    assert opts.kind == family
    assert opts.generation()["max_new_tokens"] == (1024 if family == "chat" else 40)
    assert LocalVlmOptions(model=model, family="blip").kind == "blip"  # the user's word wins

"""tests/peer/run.py (diffusers' fast tests against the DATE pipelines), without running diffusers' suite: the
stand-ins load under the names the suites ask for, and a synthetic suite's test classes are found and subclassed."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

PEER = Path(__file__).resolve().parent / "peer"


def _runner():
    spec = importlib.util.spec_from_file_location("peer_run", PEER / "run.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["peer_run"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


# what the suites' get_dummy_components ask for, and what each must then do
STANDIN_CHECK = r"""
import json, transformers as tf
exec(open(SCRIPT).read())
got = {}
t = tf.CLIPTokenizer.from_pretrained("hf-internal-testing/tiny-random-clip")
got["clip"] = [type(t).__name__, t.model_max_length, max(t("a photo of a cat").input_ids) < 1000]
c = tf.AutoConfig.from_pretrained("hf-internal-testing/tiny-random-t5")
t = tf.AutoTokenizer.from_pretrained("hf-internal-testing/tiny-random-t5")
ids = t("a cat", padding="max_length", max_length=12).input_ids
got["t5"] = [type(c).__name__, c.d_model, type(t).__name__, ids.count(t.eos_token_id), len(t) <= c.vocab_size]
t = tf.GemmaTokenizer.from_pretrained("hf-internal-testing/dummy-gemma")
got["gemma"] = [max(t("a photo of a cat", padding="max_length", max_length=30).input_ids) < 8, t.padding_side]
t = tf.Qwen2TokenizerFast.from_pretrained("hf-internal-testing/tiny-random-Qwen2VLForConditionalGeneration")
text = t.apply_chat_template([{"role": "user", "content": "a cat"}], tokenize=False, add_generation_prompt=True,
                             enable_thinking=False)
got["qwen"] = [text, t.pad_token, tf.Qwen2Tokenizer.from_pretrained(
    "hf-internal-testing/tiny-random-Qwen2VLForConditionalGeneration")("a").input_ids == t("a").input_ids]
p = tf.AutoProcessor.from_pretrained("hf-internal-testing/Mistral-Small-3.1-24B-Instruct-2503-only-processor")
msgs = [[{"role": "system", "content": [{"type": "text", "text": "s"}]},
         {"role": "user", "content": [{"type": "text", "text": "a dog"}]}]] * 2
out = p.apply_chat_template(msgs, add_generation_prompt=False, tokenize=True, return_dict=True, return_tensors="pt",
                            padding="max_length", truncation=True, max_length=8)
got["mistral"] = [list(out["input_ids"].shape), int(out["input_ids"].max()) < 32000]
print(json.dumps(got))
"""


def test_standins_load_as_the_suites_ask():
    code = f"SCRIPT = {str(PEER / 'conftest_offline.py')!r}\n" + STANDIN_CHECK
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["clip"] == ["CLIPTokenizer", 77, True]
    assert got["t5"] == ["T5Config", 32, "T5Tokenizer", 1, True]
    assert got["gemma"] == [True, "right"]
    assert got["qwen"] == ["<|im_start|>user\na cat<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
                           "<|endoftext|>", True]  # fmt: skip
    assert got["mistral"] == [[2, 8], True]


SUITE_FILE = """
import unittest
from diffusers import StableDiffusionPipeline
from ..testing_utils import BasePipelineTesterConfig, PipelineTesterMixin, MemoryTesterMixin, slow


class SDConfig(BasePipelineTesterConfig):
    pipeline_class = StableDiffusionPipeline


class TestSD(SDConfig, PipelineTesterMixin):
    pass


class TestSDMemory(SDConfig, MemoryTesterMixin):
    pass


class OldStyleFastTests(PipelineTesterMixin, unittest.TestCase):
    pipeline_class = StableDiffusionPipeline


@slow
class TestSDSlow(SDConfig, PipelineTesterMixin):
    pass


class SDIntegrationTests(PipelineTesterMixin, unittest.TestCase):
    pipeline_class = StableDiffusionPipeline


class OtherFastTests(PipelineTesterMixin, unittest.TestCase):
    pipeline_class = StableDiffusionPipelineOther
"""


def test_finds_the_fast_classes_and_writes_subclasses(tmp_path):
    run = _runner()
    folder = tmp_path / "tests" / "pipelines" / "sd"
    folder.mkdir(parents=True)
    (tmp_path / "tests" / "conftest.py").write_text("")
    (folder / "test_sd.py").write_text(textwrap.dedent(SUITE_FILE))
    found = run.fast_test_classes(tmp_path / "tests", "StableDiffusionPipeline")
    assert [c.nodeid for c in found] == [
        "tests/pipelines/sd/test_sd.py::TestSD",
        "tests/pipelines/sd/test_sd.py::OldStyleFastTests",
    ]
    every = run.fast_test_classes(tmp_path / "tests", "StableDiffusionPipeline", all_classes=True)
    assert [c.name for c in every] == ["TestSD", "TestSDMemory", "OldStyleFastTests"]

    run.write_subclasses(tmp_path, "sd", "StableDiffusionPipeline", found)
    generated = folder / "test_date_peer_test_sd.py"
    text = generated.read_text()
    compile(text, str(generated), "exec")
    assert "class TestDATE_TestSD(_stock.TestSD):" in text and "by_name('sd').date_pipeline()" in text
    assert found[0].ours == "tests/pipelines/sd/test_date_peer_test_sd.py::TestDATE_TestSD"
    # both runs' node ids meet under one name
    key = "sd/test_sd.py::TestSD::test_x"
    assert run._key(found[0].ours + "::test_x") == run._key(found[0].nodeid + "::test_x") == key


def test_reports_families_it_cannot_run(tmp_path):
    run = _runner()
    from date_diffusion.families import Family

    missing_stock = Family("x", "X", "NoSuchStockPipeline", "stable_diffusion", "StableDiffusionDATEPipeline", (), "")
    missing_date = Family("y", "Y", "StableDiffusionPipeline", "no_such_module", "NoDATEPipeline", (), "")
    assert run.check_family(missing_stock, tmp_path, tmp_path, 1, False).status == "no-stock"
    result = run.check_family(missing_date, tmp_path, tmp_path, 1, False)
    assert result.status == "no-date" and "no_such_module" in result.note
    assert "no-date" in run.table([result])

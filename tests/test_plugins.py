"""Plugins and the public registration APIs: families, rewards, model-folder files (the toy world is one plugin)."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from date_diffusion import families, model_folder, plugins
from date_diffusion.core.settings import SettingError
from date_diffusion.hub import ModelNotFoundError
from date_diffusion.rewards import registry
from date_diffusion.toyworld import world

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.fixture
def fresh_plugins(monkeypatch):
    """Plugins loaded anew (with what the test puts in `plugins.entry_points`), the registries restored after."""
    saved = (list(families._REGISTERED), dict(registry._RECORDS), dict(registry._RENAMED), list(model_folder._FILES))
    plugins.reset()
    yield monkeypatch
    families._REGISTERED[:] = saved[0]
    registry._RECORDS.clear(), registry._RECORDS.update(saved[1])
    registry._RENAMED.clear(), registry._RENAMED.update(saved[2])
    model_folder._FILES[:] = saved[3]
    monkeypatch.undo()
    plugins.reset()


def test_the_toy_world_is_found_as_a_plugin():
    assert "toyworld" in [ep.name for ep in plugins.entry_points()]
    assert {"toy-clip", "toy-ensemble", "toy-judge"} <= {r.name for r in registry.records()}
    assert registry.renamed()["ensemble"] == "toy-ensemble"
    assert world.META_FILE in model_folder.file_names()
    assert model_folder.default_model() == world.PIPELINE


def test_installed_entry_points_are_read_and_replace_the_package_own(tmp_path, monkeypatch):
    meta = tmp_path / "mine-1.0.dist-info"
    meta.mkdir()
    (meta / "entry_points.txt").write_text(
        "[console_scripts]\nmine = mine:main\n\n[date_diffusion.plugins]\ntoyworld = elsewhere:register\n"
        "mine = mine.plugin:register [extra]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert plugins.installed() == {"toyworld": "elsewhere:register", "mine": "mine.plugin:register [extra]"}
    assert plugins.entry_points() == [plugins.Plugin("mine", "mine.plugin:register [extra]"),
                                      plugins.Plugin("toyworld", "elsewhere:register")]  # fmt: skip
    assert plugins.Plugin("x", "date_diffusion.families:register [extra]").load() is families.register


def test_a_broken_plugin_is_named(fresh_plugins):
    broken = plugins.Plugin("broken", "date_diffusion.no_such_module:register")
    fresh_plugins.setattr(plugins, "entry_points", lambda: [broken])
    for _ in range(2):  # every time a registry is asked, not only the first
        with pytest.raises(plugins.PluginError, match=r"plugin 'broken' \(entry point 'date_diffusion.no_such"):
            families.by_name("sd")


def test_a_plugin_that_raises_is_named(fresh_plugins):
    def register():
        raise ValueError("no weights")

    fresh_plugins.setattr(plugins, "entry_points", lambda: [_Loaded("raising", register)])
    with pytest.raises(plugins.PluginError, match="plugin 'raising'.*ValueError: no weights"):
        registry.check_spec("clip-l")


class _Loaded:
    """An entry point whose object is given."""

    def __init__(self, name, obj):
        self.name, self.value, self._obj = name, f"tests:{name}", obj

    def load(self):
        return self._obj


def test_a_registered_family_is_found_by_every_lookup(fresh_plugins):
    sd = families.FAMILIES[0]
    mine = replace(sd, name="mine", stock="MinePipeline", date_class="MineDATEPipeline", aliases=(),
                   single_file_types=("mine-type",))  # fmt: skip
    fresh_plugins.setattr(plugins, "entry_points", lambda: [_Loaded("mine", lambda: families.register(mine))])
    assert families.by_name("mine") is mine
    assert families.by_pipeline_class("MinePipeline") is mine
    assert families.by_single_file_type("mine-type") is mine
    assert "mine" in families.names() and "mine" not in families.NAMES
    families.register(mine)  # the same record again: nothing
    with pytest.raises(ValueError, match="takes StableDiffusionPipeline of family 'sd'"):
        families.register(replace(mine, name="other", stock="StableDiffusionPipeline"))


def test_a_registered_reward_is_built_checked_and_listed(fresh_plugins, tmp_path):
    built = []

    def build(source, device):
        built.append((source, device))
        return "a reward"

    record = registry.RewardRecord("mine", build, "optional", "mine[:DIR]")
    registry.register_reward(record)
    assert registry.reward_from_spec(f"mine:{tmp_path}", "cpu") == "a reward" and built == [(str(tmp_path), "cpu")]
    with pytest.raises(ModelNotFoundError, match="'/nowhere': no such file or folder"):  # a path, never a hub id
        registry.reward_from_spec("mine:/nowhere", "cpu")
    assert registry.spec_sources("mean(mine;aug2(mine:/x))") == [("mine", None), ("mine", "/x")]
    assert "mine[:DIR], weighted sums" in registry.SPEC_HELP
    assert "| `mine` | optional | mine[:DIR] |" in registry.reward_list()
    with pytest.raises(ValueError, match="registered already"):
        registry.register_reward(replace(record, source="none"))
    with pytest.raises(ValueError, match="source must be one of"):
        registry.RewardRecord("bad", build, "sometimes")


def test_a_renamed_reward_is_refused_with_its_new_name(fresh_plugins):
    registry.register_renamed("old-name", "clip-l", "the example")
    with pytest.raises(registry.RewardSpecError, match="reward 'old-name' is the example's, now called 'clip-l'"):
        registry.check_spec("aug2(old-name)")


def test_the_spec_is_parsed_once_into_a_tree():
    one = lambda node: registry.Sum(((1.0, node),))  # a spec of one term
    tree = registry.parse_spec("0.5*aug8(clip:/a)+mean(clip-l;subjects(hpsv2))")
    assert tree == registry.Sum(
        (
            (0.5, registry.Augmented(8, one(registry.Named("clip", "/a")))),
            (
                1.0,
                registry.Mean(
                    (one(registry.Named("clip-l", None)), one(registry.Subjects(one(registry.Named("hpsv2", None)))))
                ),
            ),
        )
    )


def test_the_rewards_doc_lists_every_reward():
    text = (DOCS / "rewards.md").read_text(encoding="utf-8")
    assert registry.with_reward_list(text) == text, "run: python -m date_diffusion.rewards.registry docs/rewards.md"


def _folder(tmp_path: Path, meta) -> Path:
    """A model folder (the toy world's index, no weights) with `date_diffusion.json` holding `meta`."""
    folder = tmp_path / "model"
    folder.mkdir()
    shutil.copy(world.PIPELINE / "model_index.json", folder)
    (folder / model_folder.FILE).write_text(meta if isinstance(meta, str) else json.dumps(meta))
    return folder


def test_any_model_folder_may_recommend_settings(tmp_path):
    from date_diffusion.pipelines.loading import reward_decoder
    from date_diffusion.resolver import resolve_settings

    folder = _folder(tmp_path, {"recommended": {"guidance_scale": 3.5, "rho": 0.25}, "reward": "clip:/mine",
                                "reward_decoder": "decoder", "notes": "free"})  # fmt: skip
    (folder / "decoder").mkdir()
    s = resolve_settings(folder, check_reward=False)
    assert (s.guidance_scale, s.date.rho, s.reward) == (3.5, 0.25, "clip:/mine")
    assert s.sources["guidance_scale"] == s.sources["rho"] == s.sources["reward"] == "model"
    assert resolve_settings(folder, paper_defaults=True, check_reward=False).date.rho == 0.5
    assert reward_decoder(folder) == str(folder / "decoder")


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        ("{oops", "date_diffusion.json is not readable JSON"),
        ({"recommended": {"guidance_scale": "loud"}}, "date_diffusion.json: recommended.guidance_scale"),
        ({"recommended": {"volume": 11}}, r'date_diffusion.json: recommended has unknown settings "volume"; known: '),
        ({"reward": 3}, "date_diffusion.json: reward must be text"),
        # round twenty-two: a pasted blank beside a name a file gives was stripped without a word
        ({"recommended": {"reward": "toy-clip\u00a0"}}, "recommended.reward 'toy-clip.xa0' has U.00A0 NO-BREAK SPACE"),
        # round twenty-one: a misspelt `recommended` was read as a note, its settings dropped without a word
        ({"recomended": {"guidance_scale": 9}}, "date_diffusion.json: its key 'recomended' is not read: 'recommended'"),
    ],
)
def test_a_model_folder_file_is_checked_naming_file_and_key(tmp_path, meta, message):
    from date_diffusion.resolver import resolve_settings

    with pytest.raises((ValueError, SettingError), match=message):
        resolve_settings(_folder(tmp_path, meta))


def test_a_model_folder_holding_two_recommendation_files_is_refused(tmp_path):
    """Round eleven: a folder with both `date_diffusion.json` and the toy world's `toyworld.json` took one and
    ignored the other's settings without a word."""
    from date_diffusion.resolver import resolve_settings

    folder = _folder(tmp_path, {"recommended": {"guidance_scale": 3.5}})
    resolve_settings(folder, check_reward=False)  # one file: read
    (folder / world.META_FILE).write_text(json.dumps({"recommended": {"guidance_scale": 7.0}}))
    with pytest.raises(ValueError, match="holds both date_diffusion.json and toyworld.json: a model folder says"):
        resolve_settings(folder, check_reward=False)

"""A quiet start for Python callers: the libraries' remarks that concern no user are dropped where they are made,
every other record passes; loading shows no progress bars, and the libraries' settings are as they were after."""

import logging
import warnings

import pytest
from diffusers.utils import logging as diffusers_logging
from transformers.utils import logging as transformers_logging

import date_diffusion  # noqa: F401  (importing the package installs the filters)
from date_diffusion.quiet import REMARKS, install, quiet_loading


@pytest.mark.parametrize("before", [True, False])
def test_loading_bars_are_off_inside_and_as_they_were_after(before):
    for library in (diffusers_logging, transformers_logging):
        (library.enable_progress_bar if before else library.disable_progress_bar)()
    try:
        with quiet_loading():
            assert not diffusers_logging.is_progress_bar_enabled()
            assert not transformers_logging.is_progress_bar_enabled()
            with quiet_loading():  # nested (a pipeline loading its reward): still off, and off after the inner
                pass
            assert not diffusers_logging.is_progress_bar_enabled()
        assert diffusers_logging.is_progress_bar_enabled() == before
        assert transformers_logging.is_progress_bar_enabled() == before
    finally:
        diffusers_logging.enable_progress_bar()
        transformers_logging.enable_progress_bar()


def test_only_the_remarks_are_dropped_at_their_loggers(caplog):
    install()
    with caplog.at_level(logging.WARNING):
        for remark in REMARKS:
            if remark.logger is not None:
                logger = logging.getLogger(remark.logger)
                logger.warning("%s", remark.example)  # the remark: dropped
                logger.warning("something else from %s", remark.logger)  # anything else from there: shown
        logging.getLogger("mine").warning("my own record")
    shown = [r.getMessage() for r in caplog.records]
    assert not any(remark.example in message for remark in REMARKS for message in shown)
    assert "my own record" in shown
    assert {f"something else from {r.logger}" for r in REMARKS if r.logger} <= set(shown)
    with warnings.catch_warnings(record=True) as caught:
        install()
        warnings.simplefilter("default", UserWarning)  # the user's own filter holds for the rest
        install()  # as `quiet_loading` calls it: the remarks' filter first again
        for remark in REMARKS:
            if remark.logger is None:  # a `warnings.warn` remark
                warnings.warn(f"The {remark.example} and ignored", UserWarning, stacklevel=1)
        warnings.warn("a warning of the user's own", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["a warning of the user's own"]


def test_a_remark_drops_only_its_own_message(caplog):
    """diffusers' notice on the `block_out_channels` it writes into every AutoencoderTiny config is dropped; the same
    notice naming another attribute (a config that really is wrong) is shown."""
    install()
    logger = logging.getLogger("diffusers.configuration_utils")
    with caplog.at_level(logging.WARNING):
        for attributes in ("{'block_out_channels': [64, 64, 64, 64]}", "{'block_out_channels': [64], 'scale': 2}"):
            logger.warning("The config attributes %s were passed to AutoencoderTiny, but are not expected", attributes)
    assert [r.getMessage()[:70] for r in caplog.records] == [
        "The config attributes {'block_out_channels': [64], 'scale': 2} were pa"
    ]


def test_a_lora_remark_drops_the_text_encoders_notice_only():
    """diffusers' notice on a LoRA without text-encoder keys (most adapt the UNet only) is dropped; the same notice
    for the UNet (a LoRA that adapts nothing of it) is not a remark."""
    from date_diffusion.quiet import silenced

    text = "No LoRA keys associated to {} found with the prefix='{}'. This is safe to ignore if ..."
    assert silenced(text.format("CLIPTextModel", "text_encoder"))
    assert silenced(text.format("CLIPTextModelWithProjection", "text_encoder_2"))
    assert not silenced(text.format("UNet2DConditionModel", "unet"))
    assert silenced(
        "Already found a `peft_config` attribute in the model. This will lead to having multiple adapters "
        "in the model. Make sure to know what you are doing!"
    )  # round ten: a second --lora


def test_each_restated_message_is_one_diffusers_makes(components):
    """`quiet.RESTATED` against the installed diffusers: a pipeline built over an outdated scheduler and UNet
    configuration warns three times, and each warning is restated in short by exactly one entry."""
    from diffusers import DDIMScheduler
    from diffusers.configuration_utils import FrozenDict

    from date_diffusion import StableDiffusionDATEPipeline
    from date_diffusion.quiet import RESTATED, restated

    components["scheduler"] = DDIMScheduler(steps_offset=0, clip_sample=True)
    unet = components["unet"]
    unet._internal_dict = FrozenDict({**unet.config, "_diffusers_version": "0.8.0"})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        StableDiffusionDATEPipeline(**components)
    messages = [str(w.message) for w in caught if issubclass(w.category, FutureWarning)]
    assert len(messages) == len(RESTATED) == 3
    shown = [restated(m) for m in messages]
    assert all(len(m) > 500 and len(s) < 300 for m, s in zip(messages, shown)), shown
    assert len(set(shown)) == 3 and "steps_offset 0" in shown[0] and "clip_sample true" in shown[1], shown


def test_a_held_notice_shows_after_a_load_that_succeeds_and_never_before_an_error(caplog):
    """A LoRA for another family: diffusers' `No LoRA keys ... prefix='unet'` notice came before the command's own
    error, which says it better; held (`quiet.held`), it is dropped when an error ends the load and shown when the
    load succeeds (a LoRA of the text encoder alone: the notice is then news)."""
    import logging

    import diffusers  # noqa: F401  (its loggers propagate to nothing: the test's handler is attached to this one)

    from date_diffusion.quiet import held

    logger = logging.getLogger("diffusers.loaders.peft")
    logger.addHandler(caplog.handler)
    with pytest.raises(ValueError), held("diffusers.loaders.peft"):
        logger.warning("No LoRA keys associated to UNet2DConditionModel found with the prefix='unet'.")
        raise ValueError("the LoRA matches no module")
    assert "No LoRA keys" not in caplog.text
    with held("diffusers.loaders.peft"):
        logger.warning("No LoRA keys associated to UNet2DConditionModel found with the prefix='unet'.")
        assert "No LoRA keys" not in caplog.text  # held while the load runs
    assert "No LoRA keys" in caplog.text
    logger.removeHandler(caplog.handler)

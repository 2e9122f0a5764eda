"""Instruction templates: the system and user text sent with each image.

The exact text is part of the cache key, so editing a template here invalidates its cached
descriptions (on purpose: they were written under a different instruction).

- ``content_first``: our paraphrase of the SCVA-AGIQA generator instruction (methods.md §1.7):
  about 50 words, content first, then style, camera angle, colour atmosphere and quality, with no
  preamble. Content comes first because the SCVA text encoder truncates descriptions to roughly
  their first 25-30 words.
- ``quality_aware``: DepictQA-style (methods.md §4): name the visible distortions first, then
  give a quality verdict, so the quality judgement is explicit rather than incidental.
- ``content_only``: content, style and composition with no quality words, for ablations that
  keep the external VLM's quality judgement out of the text (methods.md §1.7, last point).
"""

from __future__ import annotations

from dataclasses import dataclass

from agiqa.errors import ConfigError


@dataclass(frozen=True)
class Template:
    """A named instruction: ``system`` goes in the system message, ``user`` beside the image."""

    name: str
    system: str
    user: str


TEMPLATES: dict[str, Template] = {
    "content_first": Template(
        name="content_first",
        system=(
            "You write descriptions of images. For each image, write about 50 words. Begin "
            "with what the image shows, in some detail; then mention its artistic style (for "
            "example anime, science fiction, realistic, abstract or baroque), the camera angle, "
            "the colour atmosphere and the image quality. Content always comes first."
        ),
        user=(
            "Describe this image in about 50 words. Start directly with the description; do "
            'not open with filler such as "The image shows".'
        ),
    ),
    "quality_aware": Template(
        name="quality_aware",
        system=(
            "You are an expert in image quality assessment. You inspect an image for visible "
            "distortions (for example blur, noise, compression artefacts, over- or "
            "under-exposure, colour shifts, malformed objects, distorted faces or hands, "
            "incoherent textures, unreadable text) before you judge its overall quality."
        ),
        user=(
            "First list the distortions you can see in this image and where they are, or say "
            "that there are none. Then rate its overall quality as one of bad, poor, fair, good "
            "or excellent and explain the verdict in one sentence. Use at most 80 words."
        ),
    ),
    "content_only": Template(
        name="content_only",
        system=(
            "You write factual descriptions of images. Describe what is shown, the artistic "
            "style, the composition and the colours. Never comment on image quality, sharpness, "
            "resolution, artefacts or aesthetics."
        ),
        user="Describe this image in about 50 words, starting directly with its content.",
    ),
}


def template_names() -> list[str]:
    return sorted(TEMPLATES)


def resolve_template(
    name: str | None = None, *, instruction: str | None = None, system: str | None = None
) -> Template:
    """The template to use: a named one, optionally overridden by custom text.

    Args:
        name: A key of ``TEMPLATES``; default ``content_first``. With custom text and no name,
            the result is named ``custom``.
        instruction: Custom user text replacing the template's.
        system: Custom system text replacing the template's (an empty string sends none).

    Raises:
        ConfigError: On an unknown name or an empty custom instruction.
    """
    if instruction is not None and not instruction.strip():
        raise ConfigError("the custom instruction is empty")
    if name is None:
        base = Template("custom", "", "") if instruction else TEMPLATES["content_first"]
    elif name in TEMPLATES:
        base = TEMPLATES[name]
    else:
        known = ", ".join(template_names())
        raise ConfigError(f"unknown template '{name}' (known: {known}; or give an instruction)")
    if instruction is None and system is None:
        return base
    return Template(
        name="custom" if name is None else f"{name}+custom",
        system=base.system if system is None else system,
        user=base.user if instruction is None else instruction,
    )

"""The brand and its end card in a campaign spec: `brand: {name, logo}` and `end_card`.

Images are checked where the spec is loaded (`farm.campaign.images`, through the field type
`ImageRef`); `farm.output.endcard` draws the card.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Discriminator, Field, Tag

from farm.campaign.fields import Color, ImageRef, NonBlank, SpecModel


class Brand(SpecModel):
    """The brand with its logo (write just the name when there is no logo)."""

    name: NonBlank = Field(description="Brand name, substituted for {brand}.")
    logo: ImageRef = Field(
        description="Logo (PNG, JPEG or WebP, transparency kept): an fsspec URL or a path "
        "relative to the spec; shown on the end card."
    )


def _brand_kind(value: Any) -> str:
    return "[brand]" if isinstance(value, dict | Brand) else "[name]"


def _bare_brand(value: Any) -> Any:
    """{name: X} without a logo is the brand X: one spelling, one campaign id."""
    if isinstance(value, dict) and value.keys() <= {"name", "logo"} and value.get("logo") is None:
        return value.get("name", value)
    return value


BrandField = Annotated[
    Annotated[NonBlank, Tag("[name]")] | Annotated[Brand, Tag("[brand]")],
    Discriminator(_brand_kind),
    BeforeValidator(_bare_brand),
]


class EndCard(SpecModel):
    """The closing card of each variant whose product has a reference image.

    Its last `seconds` (at most half the video) show the product's reference image
    composited as it is (never generated), contain-fitted into the format's safe zone, with
    the brand's logo and the locale's CTA, on `background`. The video's length is unchanged.
    """

    seconds: float = Field(
        1.5, ge=0, le=10, description="Length in seconds (0: no end card); at most half."
    )
    background: Color = Field("#ffffff", description="Background colour, #rrggbb.")

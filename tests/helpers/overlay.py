"""Ad copy in every script the overlay supports, and frames where any drawn pixel shows."""

from __future__ import annotations

import numpy as np

# Real ad copy per locale: (headline, call-to-action).
COPY = {
    "en-US": ("Summer sale: everything 50% off this weekend only", "Shop now"),
    "zh-CN": ("夏季大促，全场五折，仅限本周末！", "立即购买"),
    "zh-TW": ("夏季大促銷，全館五折，僅限本週末！", "立即選購"),
    "ja-JP": ("夏のセール開催中！今週末だけ全品半額", "今すぐ購入"),
    "ko-KR": ("여름 세일, 이번 주말 단 이틀 전 품목 50% 할인", "지금 구매하기"),
    "ar-SA": ("تخفيضات الصيف: خصم ٥٠٪ على كل المنتجات هذا الأسبوع فقط", "تسوق الآن"),
    "he-IL": ("מבצע קיץ: 50% הנחה על הכול בסוף השבוע הזה בלבד", "קנו עכשיו"),
    "th-TH": ("ลดราคาฤดูร้อน ลดครึ่งราคาทุกชิ้น เฉพาะสุดสัปดาห์นี้เท่านั้น", "ซื้อเลย"),
    "hi-IN": ("गर्मियों की सेल: इस सप्ताहांत हर चीज़ पर 50% की छूट", "अभी खरीदें"),
}


def noise(n: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Frames where any change shows: every pixel differs from its neighbours."""
    return np.random.default_rng(seed).integers(0, 256, (n, height, width, 3), dtype=np.uint8)

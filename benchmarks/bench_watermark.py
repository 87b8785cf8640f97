"""Watermark benchmark: invisibility (PSNR), bit accuracy through H.264 and resize, speed.

    python -m benchmarks.bench_watermark

2 s clips (49 frames, 256x144) from farm/testing/clips.py: ad-like scene, noise-like
texture (the test clip), and a stress clip of full-contrast noise moving 2 px per frame.
Bit accuracy is of the 64 raw payload bits before error correction; "decoded" says whether
the id came back (CRC + Chase decoding), the ECC the tests rely on.
"""

from __future__ import annotations

from benchmarks.common import median_time, report, table
from farm.output import watermark as wm
from farm.output.media import encode_mp4
from farm.testing.clips import half_size, noise_clip, scene_clip

VARIANT = "3fa85f6457174562b3fc"
CLIPS = {
    "scene": scene_clip,
    "noise": noise_clip,
    "noise (stress)": lambda: noise_clip(contrast=0.7, motion=(1, 2), grain=12.0),
}
ATTACKS = {
    "none": lambda m: m,
    "CRF 23": lambda m: encode_mp4(m, 24, crf=23),
    "CRF 28": lambda m: encode_mp4(m, 24, crf=28),
    "0.5x + CRF 28": lambda m: encode_mp4(half_size(m), 24, crf=28),
}


def main() -> None:
    expected = wm.payload_bits(VARIANT)
    rows, data = [], {}
    for name, make in CLIPS.items():
        frames = make()
        marked = wm.embed(frames, VARIANT)
        row = {"psnr_db": round(wm.psnr(frames, marked), 2)}
        for attack, fn in ATTACKS.items():
            out = fn(marked)
            res = wm.verify_file(out) if isinstance(out, bytes) else wm.extract(out)
            row[attack] = (wm.bit_accuracy(res.bits, expected), res.payload_hex == VARIANT[:16])
        clean = wm.verify_file(encode_mp4(frames, 24, crf=28))
        n = len(frames)
        embed_s = median_time(lambda f=frames: wm.embed(f, VARIANT), 3)
        extract_s = median_time(lambda m=marked: wm.extract(m), 3)
        row["embed_ms_per_frame"], row["extract_ms_per_frame"] = (
            1e3 * embed_s / n,
            1e3 * extract_s / n,
        )
        row["unmarked_found"] = clean.found
        data[name] = row
        cells = [f"{row[a][0]:.1%} {'yes' if row[a][1] else 'NO'}" for a in ATTACKS]
        times = [f"{row['embed_ms_per_frame']:.2f}", f"{row['extract_ms_per_frame']:.2f}"]
        rows.append([name, f"{row['psnr_db']:.1f}", *cells, "yes" if clean.found else "no", *times])
    headers = ["clip", "PSNR dB", *(f"bits / decoded: {a}" for a in ATTACKS)]
    headers += ["false positive (unmarked)", "embed ms/frame", "extract ms/frame"]
    text = table(headers, rows)
    text += "\n\nTargets: >= 95% bits at CRF 28 and after 0.5x + CRF 28; PSNR >= 40 dB."
    report("watermark", text, data)


if __name__ == "__main__":
    main()

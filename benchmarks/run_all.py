"""Run every benchmark (`make bench`); each writes its table to benchmarks/results/."""

from benchmarks import (
    bench_campaign,
    bench_diffusers,
    bench_manifest,
    bench_model,
    bench_serve,
    bench_watermark,
    bench_windows,
)


def main() -> None:
    bench_model.main()
    bench_campaign.main()
    bench_manifest.main([])
    bench_serve.main(["small", "tiny"])
    bench_windows.main([])
    bench_watermark.main()
    bench_diffusers.main([])


if __name__ == "__main__":
    main()

"""Run every benchmark (`make bench`); each writes its table to benchmarks/results/."""

from benchmarks import bench_manifest, bench_model, bench_windows


def main() -> None:
    bench_model.main()
    bench_manifest.main([])
    bench_windows.main([])


if __name__ == "__main__":
    main()

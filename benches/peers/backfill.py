"""The backfill query in a peer engine, for benches/backfill_peers.rs.

usage: backfill.py (polars|datafusion) INPUT_DIR OUTPUT_FILE WINDOW_MS PARTITIONS

Reads the hive-partitioned Parquet events (user_id utf8, ts timestamp ms, amount int64),
sums amount per user per fixed window of WINDOW_MS, and writes (user_id, window_start,
window_end, total) as one Parquet file: the same query as Riffle's `backfill` example.
Prints one JSON line: the job's seconds (read to written) and the peak RSS in KiB.
"""
import json
import resource
import sys
import time


def run_polars(src, out, window_ms):
    import polars as pl

    ms = pl.col("ts").cast(pl.Datetime("ms")).cast(pl.Int64)
    start = (ms // window_ms) * window_ms
    (
        pl.scan_parquet(f"{src}/**/*.parquet", hive_partitioning=True)
        .select(["user_id", "ts", "amount"])
        .group_by([pl.col("user_id"), start.alias("window_start")])
        .agg(pl.col("amount").sum().alias("total"))
        .with_columns((pl.col("window_start") + window_ms).alias("window_end"))
        .select(["user_id", "window_start", "window_end", "total"])
        .sink_parquet(out)
    )


def run_datafusion(src, out, window_ms, partitions):
    import datafusion

    config = datafusion.SessionConfig().with_target_partitions(partitions)
    ctx = datafusion.SessionContext(config)
    ctx.register_parquet("events", src, table_partition_cols=[("date", "string")])
    df = ctx.sql(
        f"""
        SELECT user_id,
               (CAST(CAST(ts AS BIGINT) AS BIGINT) / {window_ms}) * {window_ms} AS window_start,
               (CAST(CAST(ts AS BIGINT) AS BIGINT) / {window_ms}) * {window_ms} + {window_ms} AS window_end,
               SUM(amount) AS total
        FROM events
        GROUP BY user_id, (CAST(CAST(ts AS BIGINT) AS BIGINT) / {window_ms})
        """
    )
    df.write_parquet(out)


def main():
    engine, src, out, window_ms, partitions = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    started = time.perf_counter()
    if engine == "polars":
        run_polars(src, out, window_ms)
    elif engine == "datafusion":
        run_datafusion(src, out, window_ms, partitions)
    else:
        raise SystemExit(f"unknown engine {engine}")
    seconds = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "peak_rss_kib": peak_kib}))


if __name__ == "__main__":
    main()

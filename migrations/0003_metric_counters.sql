-- Monotonic counters for /metrics (sagas started and finished, retries, failed
-- attempts, step duration histograms), added to by the coordinator in the same
-- transaction as the history they are tallied from, so they are exact across
-- crashes and shared by every coordinator. `labels` is the rendered Prometheus label
-- set (`activity="payments.charge",le="0.5"`). Each counter is split over `shard`
-- rows (a transaction picks one at random) so concurrent batches and wake-up
-- scanners do not queue on one hot row; readers sum the shards.
CREATE TABLE metric_counters (
    name   text NOT NULL,
    labels text NOT NULL,
    shard  smallint NOT NULL,
    value  double precision NOT NULL,
    PRIMARY KEY (name, labels, shard)
);

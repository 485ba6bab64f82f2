"""A complete IngestionSchedule used by the pure tests of the contract and the operator."""

SCHEDULE = {
    "apiVersion": "ingestion.dev/v1alpha1", "kind": "IngestionSchedule",
    "metadata": {"name": "binance-um-klines", "namespace": "data", "uid": "u-1", "generation": 3},
    "spec": {
        "schedule": "0 2 * * *", "timezone": "UTC", "enabled": True,
        "startingDeadlineSeconds": 300, "activeDeadlineSeconds": 3600, "backoffLimit": 2,
        "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 1,
        "target": {"endpoint": None, "region": "ap-northeast-1", "bucket": "data.binance.vision", "anonymous": True,
                   "keyTemplate": "data/futures/um/daily/klines/{symbol}/1m/{symbol}-1m-{date}.zip",
                   "checksumSuffix": ".CHECKSUM", "symbols": ["BTCUSDT", "ETHUSDT"], "lagDays": 1, "lookbackDays": 30},
        "repair": {"maxRepairsPerRun": 100, "load": "none"},
        "storage": {"duckdb": {"claimName": "ingestion-data", "path": "/data/ingestion.duckdb"}},
        "metrics": {"pushgatewayUrl": "http://pushgateway.monitoring:9091"},
    },
}

"""The pure model: names, keys, routing, config, errors and result encoding. No I/O, and no redis, celery,
kombu or click: everything else builds on it, and its tests need no server."""

"""The embedded local stack: `scalablejob up`, its private redis-server, the keeper that outlives it, Flower
behind a login, and a real scaler process for tests and benchmarks. No component imports it."""

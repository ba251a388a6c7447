"""The Redis store: connecting to the broker, finding it, and the data structures the service keeps there
(request states, the output stream, presence and host records, limits). Its Lua scripts are in lua/."""

"""The running service's parts; service.py orders their start and stop.

`liveconfig` is the running configuration and its reloads; `detector` loads the model;
`cameras` is the detection chain of this shard's cameras, whose threads `readers` owns;
`outputset` is the outputs the pipeline fans out to; `snapshots` opens the snapshot
directory and wires the main streams; `endpoint` starts the HTTP endpoint; `periodic` holds
the timers and `signals` the signal handlers.
"""

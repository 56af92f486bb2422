"""DeepSpeed ZeRO settings that evaplan renders, and that the planner's memory and
communication models therefore assume. One source of truth for both.

Values are DeepSpeed's own defaults (deepspeed/runtime/zero/config.py, DeepSpeed 0.19.8,
`DeepSpeedZeroConfig` field defaults), which evaplan writes out explicitly so a rendered config
does not change meaning when DeepSpeed changes a default.
"""

from __future__ import annotations

# Elements (not bytes) per bucket, as DeepSpeed counts them.
REDUCE_BUCKET_SIZE = int(5e8)  # zero_optimization.reduce_bucket_size
ALLGATHER_BUCKET_SIZE = int(5e8)  # zero_optimization.allgather_bucket_size (stage 1/2)
STAGE3_PREFETCH_BUCKET_SIZE = int(5e7)  # zero_optimization.stage3_prefetch_bucket_size
STAGE3_PARAM_PERSISTENCE_THRESHOLD = int(1e5)  # params with fewer elements stay gathered
STAGE3_MAX_LIVE_PARAMETERS = int(1e9)  # zero_optimization.stage3_max_live_parameters
STAGE3_MAX_REUSE_DISTANCE = int(1e9)  # zero_optimization.stage3_max_reuse_distance
OVERLAP_COMM = True  # zero_optimization.overlap_comm (evaplan's choice; DeepSpeed's default differs by stage)
CONTIGUOUS_GRADIENTS = True  # zero_optimization.contiguous_gradients

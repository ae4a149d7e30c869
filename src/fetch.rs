//! Download → decompress → NAR → files, verified while streaming.

"""Hope (NL Sec. 8): its config, its mixer (self-modifying Titans and its memory banks), its channel memory (the
Continuum Memory System) and the segment-wise forward that lets the CMS learn in context."""

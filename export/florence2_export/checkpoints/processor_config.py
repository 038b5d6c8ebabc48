"""The processor files transformers 5 expects beside a Florence-2 checkpoint's weights.

:data:`POST_PROCESSOR_CONFIG` is ``processor_config.json``'s ``post_processor_config`` as the converted
published checkpoints have it (``Florence2PostProcessor``'s parsing rules and the phrase-grounding stop
list); the original-layout conversion (:mod:`.original`) and the test checkpoints
(:mod:`florence2_export.toy.tiny`) write it.
"""

BANNED_GROUNDING_TOKENS = [
    "it", "I", "me", "mine", "you", "your", "yours", "he", "him", "his", "she", "her", "hers", "they", "them",
    "their", "theirs", "one", "oneself", "we", "us", "our", "ours", "you", "your", "yours", "they", "them",
    "their", "theirs", "mine", "yours", "his", "hers", "its", "ours", "yours", "theirs", "myself", "yourself",
    "himself", "herself", "itself", "ourselves", "yourselves", "themselves", "this", "that", "these", "those",
    "who", "whom", "whose", "which", "what", "who", "whom", "whose", "which", "that", "all", "another", "any",
    "anybody", "anyone", "anything", "each", "everybody", "everyone", "everything", "few", "many", "nobody",
    "none", "one", "several", "some", "somebody", "someone", "something", "each other", "one another",
    "myself",
    "yourself", "himself", "herself", "itself", "ourselves", "yourselves", "themselves", "the image", "image",
    "images", "the", "a", "an", "a group", "other objects", "lots", "a set",
]  # fmt: skip

POST_PROCESSOR_CONFIG = {
    "ocr": {
        "pattern": r"(.+?)" + r"<loc_(\d+)>" * 8,
        "area_threshold": 0.0,
    },
    "phrase_grounding": {"banned_grounding_tokens": BANNED_GROUNDING_TOKENS},
    "pure_text": {},
    "description_with_bboxes": {},
    "description_with_polygons": {},
    "polygons": {},
    "bboxes": {},
    "description_with_bboxes_or_polygons": {},
}

"""Word lists the generator writes titles, posts, names and search queries from.

Each category has four subtopics of eight words. A creator mixes its category's subtopics in its own
proportions and fans prefer some subtopics over others, so what a creator writes about is visible in its
text — a content model can learn the same thing a collaborative one learns from behaviour. The
function words per language make a post's language visible in its text as well.
"""

from __future__ import annotations

from typing import Final

from kindred.data.schema import CATEGORIES

# category → subtopic → words. Words repeat across categories where real language does ("training").
SUBTOPICS: Final[dict[str, dict[str, tuple[str, ...]]]] = {
    "Podcasts": {
        "true-crime": (
            "crime",
            "detective",
            "mystery",
            "case",
            "evidence",
            "verdict",
            "investigation",
            "suspect",
        ),
        "interviews": (
            "interview",
            "guest",
            "conversation",
            "founder",
            "story",
            "career",
            "advice",
            "journey",
        ),
        "news": ("politics", "election", "economy", "weekly", "headlines", "analysis", "policy", "debate"),
        "history": ("history", "empire", "ancient", "war", "dynasty", "medieval", "archive", "revolution"),
    },
    "Music": {
        "electronic": ("synth", "techno", "beat", "remix", "modular", "bassline", "ambient", "producer"),
        "jazz": ("jazz", "saxophone", "improvisation", "trio", "swing", "chord", "bebop", "standards"),
        "folk": ("acoustic", "folk", "guitar", "songwriting", "ballad", "banjo", "harmony", "lyrics"),
        "hiphop": ("hiphop", "rap", "verse", "sample", "freestyle", "turntable", "mixtape", "flow"),
    },
    "Gaming": {
        "speedrun": ("speedrun", "glitch", "route", "record", "splits", "runner", "frame", "skip"),
        "strategy": ("strategy", "tactics", "build", "meta", "ranked", "turn", "civilization", "chess"),
        "rpg": ("rpg", "quest", "dungeon", "character", "lore", "campaign", "boss", "loot"),
        "indie": ("indie", "pixel", "devlog", "prototype", "platformer", "jam", "roguelike", "sprite"),
    },
    "Art": {
        "painting": ("painting", "oil", "canvas", "watercolor", "brush", "portrait", "palette", "landscape"),
        "digital": (
            "digital",
            "procreate",
            "illustration",
            "concept",
            "lineart",
            "shading",
            "render",
            "tablet",
        ),
        "comics": ("comic", "manga", "panel", "webcomic", "inking", "storyboard", "chapter", "sketchbook"),
        "sculpture": ("sculpture", "clay", "ceramics", "pottery", "kiln", "glaze", "carving", "bronze"),
    },
    "Writing": {
        "fiction": ("novel", "fiction", "serial", "plot", "protagonist", "fantasy", "draft", "villain"),
        "poetry": ("poetry", "poem", "verse", "haiku", "sonnet", "stanza", "spoken", "rhyme"),
        "essays": (
            "essay",
            "newsletter",
            "opinion",
            "culture",
            "memoir",
            "criticism",
            "column",
            "reflection",
        ),
        "craft": (
            "writing",
            "editing",
            "outline",
            "publishing",
            "manuscript",
            "prompt",
            "worldbuilding",
            "agent",
        ),
    },
    "Video": {
        "film": (
            "film",
            "cinema",
            "director",
            "screenplay",
            "shortfilm",
            "cinematography",
            "festival",
            "cut",
        ),
        "vlog": ("vlog", "daily", "travel", "adventure", "roadtrip", "city", "camera", "diary"),
        "animation": (
            "animation",
            "stopmotion",
            "frames",
            "cartoon",
            "motion",
            "rigging",
            "keyframe",
            "studio",
        ),
        "documentary": (
            "documentary",
            "footage",
            "nature",
            "wildlife",
            "narration",
            "expedition",
            "archive",
            "true",
        ),
    },
    "Comedy": {
        "standup": ("standup", "joke", "set", "openmic", "crowd", "punchline", "special", "tour"),
        "sketch": ("sketch", "parody", "satire", "skit", "improv", "bit", "scene", "troupe"),
        "memes": ("memes", "absurd", "reaction", "viral", "internet", "cursed", "template", "trend"),
        "roast": ("roast", "banter", "chaos", "prank", "comedy", "laugh", "hosts", "unhinged"),
    },
    "Education": {
        "math": ("math", "calculus", "algebra", "proof", "geometry", "statistics", "equation", "theorem"),
        "science": ("physics", "chemistry", "biology", "experiment", "quantum", "space", "astronomy", "lab"),
        "languages": (
            "language",
            "grammar",
            "vocabulary",
            "spanish",
            "japanese",
            "pronunciation",
            "fluency",
            "lesson",
        ),
        "study": ("exam", "study", "tutoring", "notes", "flashcards", "college", "course", "revision"),
    },
    "Fitness": {
        "strength": (
            "strength",
            "powerlifting",
            "squat",
            "deadlift",
            "barbell",
            "hypertrophy",
            "gym",
            "program",
        ),
        "yoga": (
            "yoga",
            "stretching",
            "mobility",
            "breathing",
            "meditation",
            "pilates",
            "balance",
            "posture",
        ),
        "running": ("running", "marathon", "trail", "pace", "endurance", "cycling", "triathlon", "intervals"),
        "nutrition": (
            "nutrition",
            "protein",
            "mealprep",
            "diet",
            "macros",
            "recovery",
            "sleep",
            "supplements",
        ),
    },
    "Cooking": {
        "baking": ("baking", "bread", "sourdough", "pastry", "cake", "dough", "oven", "croissant"),
        "vegan": ("vegan", "plantbased", "tofu", "vegetables", "salad", "lentils", "healthy", "greens"),
        "world": ("ramen", "curry", "tacos", "spices", "noodles", "dumplings", "street", "kimchi"),
        "grilling": ("grill", "barbecue", "smoked", "brisket", "steak", "charcoal", "ribs", "marinade"),
    },
    "Technology": {
        "programming": (
            "programming",
            "python",
            "rust",
            "code",
            "tutorial",
            "algorithm",
            "opensource",
            "debugging",
        ),
        "hardware": (
            "hardware",
            "electronics",
            "arduino",
            "soldering",
            "keyboard",
            "raspberry",
            "circuit",
            "robot",
        ),
        "ai": ("ai", "machinelearning", "neural", "model", "data", "llm", "training", "inference"),
        "gadgets": ("gadgets", "review", "smartphone", "laptop", "unboxing", "setup", "headphones", "audio"),
    },
    "Photography": {
        "street": ("street", "candid", "urban", "blackandwhite", "film", "night", "alley", "commute"),
        "landscape": (
            "landscape",
            "mountains",
            "sunrise",
            "hiking",
            "wilderness",
            "longexposure",
            "ocean",
            "aurora",
        ),
        "portrait": (
            "portrait",
            "lighting",
            "headshot",
            "fashion",
            "wedding",
            "retouching",
            "model",
            "studio",
        ),
        "wildlife": ("wildlife", "birds", "telephoto", "safari", "macro", "insects", "animals", "nature"),
    },
}

# Words a creator's name is built from, per category.
NAME_NOUNS: Final[dict[str, tuple[str, ...]]] = {
    "Podcasts": ("Mic", "Hour", "Signal", "Airwaves", "Talk", "Broadcast", "Frequency", "Casefiles"),
    "Music": ("Sound", "Groove", "Echo", "Chorus", "Tape", "Vinyl", "Rhythm", "Melody"),
    "Gaming": ("Pixel", "Quest", "Arcade", "Respawn", "Controller", "Level", "Boss", "Lobby"),
    "Art": ("Canvas", "Studio", "Ink", "Palette", "Atelier", "Sketch", "Brush", "Gallery"),
    "Writing": ("Quill", "Pages", "Story", "Letters", "Ink", "Margin", "Chapter", "Notebook"),
    "Video": ("Frame", "Reel", "Lens", "Cut", "Screen", "Take", "Motion", "Channel"),
    "Comedy": ("Laughs", "Jokes", "Circus", "Gags", "Roast", "Giggle", "Heckle", "Bits"),
    "Education": ("Academy", "Lessons", "Classroom", "Tutor", "Lab", "Notes", "School", "Lecture"),
    "Fitness": ("Gym", "Strength", "Pulse", "Motion", "Stride", "Core", "Reps", "Flow"),
    "Cooking": ("Kitchen", "Table", "Oven", "Pantry", "Skillet", "Spoon", "Bakery", "Grill"),
    "Technology": ("Bytes", "Circuit", "Code", "Stack", "Kernel", "Lab", "Logic", "Node"),
    "Photography": ("Lens", "Shutter", "Exposure", "Aperture", "Focus", "Frame", "Light", "Negative"),
}

ADJECTIVES: Final[tuple[str, ...]] = (
    "Midnight",
    "Golden",
    "Quiet",
    "Electric",
    "Wild",
    "Tiny",
    "Brave",
    "Curious",
    "Lazy",
    "Cosmic",
    "Rusty",
    "Velvet",
    "Northern",
    "Lucky",
    "Hidden",
    "Bright",
    "Salty",
    "Honest",
    "Restless",
    "Gentle",
    "Crimson",
    "Little",
    "Modern",
    "Analog",
    "Weekend",
    "Urban",
    "Secret",
    "Happy",
    "Slow",
    "Bold",
)

NAME_SUFFIXES: Final[tuple[str, ...]] = ("", "", "", "Studio", "Club", "Collective", "Show", "Weekly", "Co")

FILLER: Final[tuple[str, ...]] = (
    "today",
    "new",
    "week",
    "update",
    "thanks",
    "members",
    "support",
    "behind",
    "scenes",
    "first",
    "favorite",
    "notes",
    "part",
    "live",
    "episode",
    "exclusive",
    "early",
    "access",
    "questions",
    "series",
    "project",
    "progress",
    "finally",
    "back",
    "together",
    "monthly",
    "bonus",
    "special",
    "story",
    "tips",
)

TITLE_TEMPLATES: Final[tuple[str, ...]] = (
    "{A} {b}: {adj} notes",
    "How I {verb} {a} {b}",
    "Episode {n}: {A} and {b}",
    "The {adj} guide to {a} {b}",
    "{A} {b}, {adj} edition",
    "Behind the scenes: {a} {b}",
    "Why {a} matters for {b}",
    "{A}, {b} and {c}",
    "{A} {b} Q&A",
    "Part {n}: {adj} {a}",
)

VERBS: Final[tuple[str, ...]] = (
    "built",
    "learned",
    "fixed",
    "planned",
    "recorded",
    "made",
    "tested",
    "explored",
)

# A few function words per language, so a post's language shows in its text.
FUNCTION_WORDS: Final[dict[str, tuple[str, ...]]] = {
    "en": ("the", "and", "with", "for", "this", "about", "our", "from"),
    "es": ("el", "la", "con", "para", "sobre", "nuestro", "de", "los"),
    "pt": ("o", "a", "com", "para", "sobre", "nosso", "do", "os"),
    "fr": ("le", "la", "avec", "pour", "sur", "notre", "des", "les"),
    "de": ("der", "die", "und", "mit", "für", "über", "unser", "das"),
    "ja": ("no", "to", "de", "wa", "desu", "kara", "mo", "ni"),
}

TIER_NAMES: Final[tuple[str, ...]] = ("Supporter", "Insider", "Backstage", "Patron", "VIP")


def _check() -> None:
    # Cheap import-time invariant: the generator relies on a full, rectangular table.
    assert tuple(SUBTOPICS) == CATEGORIES, "SUBTOPICS must list CATEGORIES in order"
    for cat, subs in SUBTOPICS.items():
        assert len(subs) == 4 and all(len(w) == 8 for w in subs.values()), cat
    assert tuple(NAME_NOUNS) == CATEGORIES


_check()

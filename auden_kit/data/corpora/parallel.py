"""A parallel English-Spanish grammar for the offline speech-translation corpus.

Every sentence is ``DET ADJ NOUN VERB DET ADJ NOUN`` in English and
``DET NOUN ADJ VERB DET NOUN ADJ`` in Spanish: the adjective moves after the noun, determiners
and adjectives agree with the noun's gender and number (``the red houses`` -> ``las casas
rojas``, ``the red maps`` -> ``los mapas rojos``), and the verb agrees with the subject's number.
A monotone word-by-word gloss (:func:`gloss`) therefore gets almost no 4-gram right: the
corpus measures reordering and agreement, not a lookup table.

Sentences are cased and end with a full stop, as real translation corpora are, so BLEU is
scored case-sensitively on detokenised text. The lexicon is small on purpose (about 190 word
forms over both languages, still over a million distinct sentences): a 20-minute CPU run must
learn the words of two languages from 1,200 utterances. Measured: with twice the lexicon the
transducer had not got past the first words of a sentence after the same number of updates.
"""

from __future__ import annotations

import dataclasses
import random

# determiner: English (singular, plural), Spanish {(gender, number): word}
DETERMINERS = {
    "def": (("the", "the"), {"ms": "el", "fs": "la", "mp": "los", "fp": "las"}),
    "indef": (("a", "some"), {"ms": "un", "fs": "una", "mp": "unos", "fp": "unas"}),
    "dem": (("this", "these"), {"ms": "este", "fs": "esta", "mp": "estos", "fp": "estas"}),
    "poss": (("my", "my"), {"ms": "mi", "fs": "mi", "mp": "mis", "fp": "mis"}),
}
# adjective: English, Spanish masculine singular (the other forms follow Spanish rules)
ADJECTIVES = {
    "red": "rojo", "white": "blanco", "black": "negro", "small": "pequeño", "new": "nuevo", "old": "viejo",
    "tall": "alto", "pretty": "bonito", "yellow": "amarillo", "big": "grande", "green": "verde", "sad": "triste",
}
# nouns: English singular/plural, Spanish singular/plural, gender
SUBJECTS = [
    ("dog", "dogs", "perro", "perros", "m"), ("cat", "cats", "gato", "gatos", "m"),
    ("boy", "boys", "niño", "niños", "m"), ("girl", "girls", "niña", "niñas", "f"),
    ("man", "men", "hombre", "hombres", "m"), ("woman", "women", "mujer", "mujeres", "f"),
    ("cow", "cows", "vaca", "vacas", "f"), ("horse", "horses", "caballo", "caballos", "m"),
]
OBJECTS = [
    ("house", "houses", "casa", "casas", "f"), ("table", "tables", "mesa", "mesas", "f"),
    ("book", "books", "libro", "libros", "m"), ("car", "cars", "coche", "coches", "m"),
    ("flower", "flowers", "flor", "flores", "f"), ("window", "windows", "ventana", "ventanas", "f"),
    ("chair", "chairs", "silla", "sillas", "f"), ("door", "doors", "puerta", "puertas", "f"),
    ("box", "boxes", "caja", "cajas", "f"), ("map", "maps", "mapa", "mapas", "m"),
    ("shoe", "shoes", "zapato", "zapatos", "m"), ("bed", "beds", "cama", "camas", "f"),
]
# verbs: English 3rd singular/plural, Spanish 3rd singular/plural
VERBS = [
    ("sees", "see", "ve", "ven"), ("has", "have", "tiene", "tienen"), ("wants", "want", "quiere", "quieren"),
    ("finds", "find", "encuentra", "encuentran"), ("buys", "buy", "compra", "compran"),
    ("paints", "paint", "pinta", "pintan"), ("carries", "carry", "lleva", "llevan"),
    ("opens", "open", "abre", "abren"),
]
LANGUAGES = ("en", "es")


def spanish_adjective(masc_sg: str, gender: str, plural: bool) -> str:
    """``rojo`` -> roja / rojos / rojas; ``grande`` -> grandes; ``azul`` -> azules."""
    if masc_sg.endswith("o"):
        word = masc_sg[:-1] + ("a" if gender == "f" else "o")
    else:
        word = masc_sg
    if plural:
        word += "s" if word[-1] in "aeiou" else "es"
    return word


@dataclasses.dataclass(frozen=True)
class Phrase:
    det: str  # key of DETERMINERS
    adj: str  # English adjective
    noun: tuple  # an entry of SUBJECTS / OBJECTS
    plural: bool

    def english(self) -> list[str]:
        return [DETERMINERS[self.det][0][self.plural], self.adj, self.noun[1 if self.plural else 0]]

    def spanish(self) -> list[str]:
        g = self.noun[4]
        det = DETERMINERS[self.det][1][g + ("p" if self.plural else "s")]
        noun = self.noun[3 if self.plural else 2]
        return [det, noun, spanish_adjective(ADJECTIVES[self.adj], g, self.plural)]


@dataclasses.dataclass(frozen=True)
class Sentence:
    subject: Phrase
    verb: tuple
    obj: Phrase

    def words(self, lang: str) -> list[str]:
        if lang == "en":
            return self.subject.english() + [self.verb[1 if self.subject.plural else 0]] + self.obj.english()
        return self.subject.spanish() + [self.verb[3 if self.subject.plural else 2]] + self.obj.spanish()

    def text(self, lang: str) -> str:
        """The cased sentence with a full stop, e.g. ``The red dog sees a small house.``"""
        w = self.words(lang)
        s = " ".join(w)
        return s[0].upper() + s[1:] + "."


def sample_sentences(n: int, rng: random.Random, used: set) -> list[Sentence]:
    """``n`` sentences never in ``used`` (updated), each phrase plural with probability 0.3."""
    out = []
    dets, adjs = sorted(DETERMINERS), sorted(ADJECTIVES)

    def phrase(nouns):
        return Phrase(rng.choice(dets), rng.choice(adjs), rng.choice(nouns), rng.random() < 0.3)

    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 100 * n + 1000:
            raise ValueError(f"the grammar cannot give {n} more distinct sentences")
        s = Sentence(phrase(SUBJECTS), rng.choice(VERBS), phrase(OBJECTS))
        key = s.text("en")
        if key in used:
            continue
        used.add(key)
        out.append(s)
    return out


def _lexicon(src: str) -> dict[str, str]:
    """Word -> its most common translation, for the gloss baseline."""
    pairs: list[tuple[str, str]] = []
    for key, ((sg, pl), es) in DETERMINERS.items():
        pairs += [(sg, es["ms"]), (pl, es["mp"])]
    for en, es in ADJECTIVES.items():
        pairs += [(en, es)]
    for n in SUBJECTS + OBJECTS:
        pairs += [(n[0], n[2]), (n[1], n[3])]
    for v in VERBS:
        pairs += [(v[0], v[2]), (v[1], v[3])]
    if src == "es":  # Spanish side: every inflected form back to the English word
        out = {es: en for en, es in pairs}
        for en, ms in ADJECTIVES.items():
            for g in "mf":
                for pl in (False, True):
                    out[spanish_adjective(ms, g, pl)] = en
        for (sg, pl), es in DETERMINERS.values():
            out.update({es["ms"]: sg, es["fs"]: sg, es["mp"]: pl, es["fp"]: pl})
        return out
    out: dict[str, str] = {}
    for en, es in pairs:
        out.setdefault(en, es)
    return out


def gloss(text: str, src: str) -> str:
    """Monotone word-by-word translation of a sentence of this grammar (the baseline that a
    model must beat): each word's most common translation, in source order, cased and stopped
    like the references."""
    lex = _lexicon(src)
    words = [lex.get(w, w) for w in text.rstrip(".").lower().split()]
    s = " ".join(words)
    return (s[0].upper() + s[1:] + ".") if s else s

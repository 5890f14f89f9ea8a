"""Word lists of the extractive summarizer, for English and Spanish: function words, small talk
and abbreviations whose period does not end a sentence. Words are compared without accents.
"""

import unicodedata


def strip_accents(text: str) -> str:
    """``text`` without combining marks (``"días"`` → ``"dias"``)."""
    decomposed = unicodedata.normalize("NFD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def _word_set(words: str) -> frozenset[str]:
    return frozenset(strip_accents(w) for w in words.split())


# Function words: they carry no topic, so they neither link sentences nor make a span "meaningful".
STOPWORDS_EN = _word_set(
    """a about above after again against all also am an and any are aren as at be because been
    before being below between both but by can cannot could couldn did didn do does doesn doing
    don down during each either else even ever every few for from further get gets got had hadn
    has hasn have haven having he her here hers herself him himself his how however if in into is
    isn it its itself just ll let like may me might more most much must my myself need needs neither
    no nor not now of off on once one only or other our ours ourselves out over own re same shall
    she should shouldn so some still such than that the their theirs them themselves then there
    these they this those though through to too under until up upon us ve very want wants was wasn
    we were weren what when where whether which while who whom whose why will with within without
    won would wouldn yet you your yours yourself yourselves"""
)
STOPWORDS_ES = _word_set(
    """a al algo algun alguna algunas alguno algunos ante antes aqui asi aun aunque cada como con
    contra cual cuales cualquier cuando cuanto de del desde donde dos durante e el ella ellas ello
    ellos en entre era eramos eran eres es esa esas ese eso esos esta estaba estaban estamos estan
    estar estas este esto estos estoy fue fueron fui ha habia hace hacer hago han has hasta hay he
    hemos la las le les lo los mas me mi mia mias mio mios mis mucha muchas mucho muchos muy nada
    ni ningun ninguna no nos nosotras nosotros nuestra nuestras nuestro nuestros o os otra otras
    otro otros para pero poco por porque puede pueden puedes puedo pues que quien quienes quiero
    quisiera se sea sean segun ser si sido siempre sin sobre sois somos son soy su sus suya suyas
    suyo suyos tal tambien tampoco tan tanto te tenemos tener tengo ti tiene tienen toda todas
    todo todos tu tus tuya tuyo un una unas uno unos usted ustedes vosotras vosotros y ya yo
    necesito necesita gustaria podria podrias"""
)
# Courtesy and small talk: words that alone never make a span worth summarizing.
SMALL_TALK = _word_set(
    """hi hello hey hiya thanks thank thx ty cheers ok okay k yes yeah yep yup nope sure please
    pls bye goodbye great cool nice good morning afternoon evening night welcome fine sorry lol
    haha hmm awesome perfect got it alright right understood help today
    hola gracias vale sí si claro perfecto perfecta bueno buena buenas buenos días tardes noches
    adiós chao chau saludos favor genial listo muchas gusto encantado encantada bien perdón
    disculpa disculpe entendido excelente jaja de acuerdo dale ayuda ayudar ayudarte hoy"""
)

# Abbreviations whose final period does not end a sentence (lowercase, without that period).
ABBREVIATIONS = frozenset(
    {
        *("mr", "mrs", "ms", "dr", "drs", "prof", "jr", "st", "vs", "e.g", "i.e", "approx"),
        *("dept", "inc", "ltd", "corp", "tel", "fig", "ref", "a.m", "p.m"),
        *("sr", "sra", "srta", "srs", "sres", "aprox", "av", "avda", "dto", "pág", "pag"),
        *("núm", "num", "nº", "ud", "uds", "vd", "vds", "ej", "p.ej", "ee.uu"),
        *("jan", "feb", "apr", "jun", "jul", "aug", "sep", "oct", "nov", "dec"),
        *("ene", "abr", "dic"),
    }
)

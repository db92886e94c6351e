"""Tag-driven recommendation: a product index, similar products, tag search, user suggestions.

>>> from labelrec.predict import TagRecommender
>>> from labelrec.recommend import ProductSearch, build_index
>>> tagger = TagRecommender.load("runs/uk")
>>> build_index(tagger, catalog_products).save("runs/uk/index")
>>> engine = ProductSearch.load("runs/uk/index", tagger)
>>> engine.similar(id="B00ABC123", limit=10)["results"][0]["shared_tags"]
>>> engine.search("remote control car", tags=["brand:Hornby"])
>>> engine.set_interactions("events.csv"); engine.recommend("U123", limit=10)

Loading an index needs numpy, scipy, pandas and pyarrow only; a tagger is loaded (lazily) for
free-text queries alone.
"""

from pathlib import Path

from labelrec.recommend.backends import ExactBackend, FaissBackend, Hits
from labelrec.recommend.engine import (
    InteractionsUnavailable,
    ProductSearch,
    format_results,
    load_tagger,
)
from labelrec.recommend.index import (
    IndexFileError,
    ProductIndex,
    UnknownProductError,
    build_index,
    build_index_from_file,
)
from labelrec.recommend.interactions import Interactions, UserSignals

__all__ = [
    "ExactBackend",
    "FaissBackend",
    "Hits",
    "IndexFileError",
    "Interactions",
    "InteractionsUnavailable",
    "ProductIndex",
    "ProductSearch",
    "UI_PAGE",
    "UnknownProductError",
    "UserSignals",
    "build_index",
    "build_index_from_file",
    "format_results",
    "load_tagger",
]

#: the static review page served at /ui (see the JSON shapes documented at its top)
UI_PAGE = Path(__file__).resolve().parents[1] / "ui" / "index.html"

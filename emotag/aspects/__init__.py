"""Aspect-based opinions (SPEC §7): what each opinion in a review is about, its polarity and category.

    from emotag.aspects import AspectExtractor, CategorySet
    ex = AspectExtractor.load()                                   # built-in categories
    ex = AspectExtractor.load(CategorySet.from_toml("cats.toml"))   # a user's own
    ex.extract("物流很快，但是包装破损了")  # -> [Aspect(物流, 很快, positive, ...), Aspect(包装, 破损了, negative, ...)]
"""

from emotag.aspects.categories import CategoryFileError, CategorySet
from emotag.aspects.extract import Aspect, AspectExtractor

__all__ = ["Aspect", "AspectExtractor", "CategoryFileError", "CategorySet"]

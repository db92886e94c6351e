"""Synthetic demo product catalog for ``make demo``.

The project may not ship third-party data, so the demo catalog is generated here from small
hand-written vocabularies (all brands are fictional).  The output has the same shape as a real
catalog -- one ``{"id", "title", "description", "tags"}`` record per product -- and mimics the
properties that matter for a multi-label tagger:

* a 2-4 level category hierarchy (8 departments, ~100 leaves) expanded into one tag per path
  prefix, e.g. ``Toys``, ``Toys > Puzzles``, ``Toys > Puzzles > Jigsaw``;
* facet tags (``brand:Brickton``, ``color:Red``, ``material:Wood``, ``age:3+``, ``size:M``, ...)
  and free keywords (``gift``, ``eco-friendly``, ``bestseller``, ...);
* titles that carry real signal for the tags (brand, product noun, attributes, keyword cues)
  with some noise: missing brands, generic nouns, spurious cues and a few dropped labels;
* ~15% Chinese titles, a few emoji, empty / short / very long descriptions;
* a Zipf-like long tail over leaf categories, brands and facet values.

Generation is deterministic for a given seed (only ``random.Random(seed)`` is used) and the
first ``n`` products do not depend on ``n_products``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import random
from bisect import bisect
from collections import Counter
from itertools import accumulate
from pathlib import Path
from typing import Any

__all__ = [
    "BRANDS",
    "DEPARTMENTS",
    "LEAVES",
    "brand_aliases",
    "catalog_stats",
    "generate_catalog",
    "split_of",
    "write_catalog",
    "write_demo",
]

# --------------------------------------------------------------------------------------------
# Vocabularies
# --------------------------------------------------------------------------------------------

DEPARTMENTS: tuple[str, ...] = (
    "Toys",
    "Electronics",
    "Home & Kitchen",
    "Clothing",
    "Sports",
    "Beauty",
    "Books",
    "Garden",
)

# Leaf category path -> (English product nouns, Chinese product noun, facet overrides).
# The first noun is the most specific.  Overrides replace the department's facet values
# (``None`` disables a facet, "shoe"/"kids" pick shoe sizes/children's ages); ``material``
# lists the leaf's plausible materials (leaves without it have no material facet).
_Leaf = tuple[str, tuple[str, ...], str, dict[str, Any]]
_LEAF_SPECS: tuple[_Leaf, ...] = (
    # Toys
    (
        "Toys > Puzzles > Jigsaw",
        ("Jigsaw Puzzle", "Puzzle"),
        "拼图",
        {"material": ("Cardboard", "Wood")},
    ),
    (
        "Toys > Puzzles > 3D Puzzles",
        ("3D Puzzle", "Model Puzzle"),
        "立体拼图",
        {"material": ("Wood", "Cardboard", "Metal")},
    ),
    (
        "Toys > Puzzles > Brain Teasers",
        ("Brain Teaser", "Puzzle Cube"),
        "益智解谜玩具",
        {"material": ("Wood", "Plastic", "Metal")},
    ),
    (
        "Toys > Building Sets > Bricks",
        ("Building Bricks Set", "Brick Set"),
        "积木玩具",
        {"material": ("Plastic", "Recycled Plastic")},
    ),
    (
        "Toys > Building Sets > Magnetic Tiles",
        ("Magnetic Tiles", "Magnet Blocks"),
        "磁力片",
        {"material": ("Plastic", "Recycled Plastic")},
    ),
    (
        "Toys > Dolls & Plush > Plush Animals",
        ("Plush Toy", "Stuffed Animal"),
        "毛绒玩具",
        {"material": ("Plush", "Organic Cotton")},
    ),
    (
        "Toys > Dolls & Plush > Fashion Dolls",
        ("Fashion Doll", "Doll"),
        "时尚娃娃",
        {"material": ("Plastic", "Vinyl")},
    ),
    (
        "Toys > Vehicles > RC Cars",
        ("Remote Control Car", "RC Car"),
        "遥控车",
        {"material": ("Plastic", "Metal")},
    ),
    (
        "Toys > Vehicles > Toy Trains",
        ("Train Set", "Toy Train"),
        "小火车",
        {"material": ("Wood", "Plastic", "Metal")},
    ),
    ("Toys > Board Games", ("Board Game", "Family Game"), "桌游", {}),
    (
        "Toys > Baby & Toddler > Stacking Toys",
        ("Stacking Toy", "Stacking Rings"),
        "叠叠乐",
        {"material": ("Wood", "Silicone", "Plastic")},
    ),
    # Electronics
    (
        "Electronics > Audio > Headphones > Over-Ear",
        ("Over-Ear Headphones", "Headphones"),
        "头戴式耳机",
        {},
    ),
    ("Electronics > Audio > Headphones > Earbuds", ("Wireless Earbuds", "Earbuds"), "蓝牙耳机", {}),
    (
        "Electronics > Audio > Speakers > Portable Speakers",
        ("Portable Speaker", "Bluetooth Speaker"),
        "便携音箱",
        {},
    ),
    ("Electronics > Computers > Laptops", ("Laptop", "Notebook Computer"), "笔记本电脑", {}),
    ("Electronics > Computers > Keyboards", ("Mechanical Keyboard", "Keyboard"), "机械键盘", {}),
    ("Electronics > Computers > Mice", ("Wireless Mouse", "Mouse"), "无线鼠标", {}),
    (
        "Electronics > Phones & Accessories > Phone Cases",
        ("Phone Case", "Protective Case"),
        "手机壳",
        {"connectivity": None, "material": ("Silicone", "Leather", "Plastic", "Recycled Plastic")},
    ),
    (
        "Electronics > Phones & Accessories > Chargers",
        ("USB-C Charger", "Fast Charger"),
        "充电器",
        {"connectivity": None},
    ),
    (
        "Electronics > Phones & Accessories > Power Banks",
        ("Power Bank", "Portable Battery"),
        "充电宝",
        {"connectivity": None},
    ),
    ("Electronics > Cameras > Action Cameras", ("Action Camera", "4K Camera"), "运动相机", {}),
    ("Electronics > Cameras > Drones", ("Camera Drone", "Drone"), "无人机", {}),
    ("Electronics > Smart Home > Smart Plugs", ("Smart Plug", "WiFi Plug"), "智能插座", {}),
    (
        "Electronics > Smart Home > Security Cameras",
        ("Security Camera", "Indoor Camera"),
        "监控摄像头",
        {},
    ),
    ("Electronics > Wearables > Smartwatches", ("Smartwatch", "Smart Watch"), "智能手表", {}),
    (
        "Electronics > Wearables > Fitness Trackers",
        ("Fitness Tracker", "Activity Band"),
        "运动手环",
        {},
    ),
    # Home & Kitchen
    (
        "Home & Kitchen > Cookware > Frying Pans",
        ("Frying Pan", "Skillet"),
        "平底锅",
        {"material": ("Cast Iron", "Stainless Steel", "Aluminum", "Ceramic")},
    ),
    (
        "Home & Kitchen > Cookware > Dutch Ovens",
        ("Dutch Oven", "Casserole Pot"),
        "铸铁锅",
        {"material": ("Cast Iron", "Enamel", "Ceramic")},
    ),
    (
        "Home & Kitchen > Kitchen Appliances > Coffee Makers > Espresso Machines",
        ("Espresso Machine", "Espresso Maker"),
        "意式咖啡机",
        {"material": ("Stainless Steel", "Plastic")},
    ),
    (
        "Home & Kitchen > Kitchen Appliances > Coffee Makers > Drip Coffee Makers",
        ("Drip Coffee Maker", "Coffee Machine"),
        "滴滤咖啡机",
        {"material": ("Stainless Steel", "Plastic", "Glass")},
    ),
    (
        "Home & Kitchen > Kitchen Appliances > Blenders",
        ("Blender", "Smoothie Maker"),
        "破壁机",
        {"material": ("Glass", "Plastic", "Stainless Steel")},
    ),
    (
        "Home & Kitchen > Kitchen Appliances > Air Fryers",
        ("Air Fryer", "Oil-Free Fryer"),
        "空气炸锅",
        {"material": ("Plastic", "Stainless Steel")},
    ),
    (
        "Home & Kitchen > Kitchen Appliances > Rice Cookers",
        ("Rice Cooker", "Rice Pot"),
        "电饭煲",
        {"material": ("Stainless Steel", "Ceramic")},
    ),
    (
        "Home & Kitchen > Tableware > Mugs",
        ("Coffee Mug", "Mug"),
        "马克杯",
        {"material": ("Ceramic", "Glass", "Stainless Steel", "Bamboo")},
    ),
    (
        "Home & Kitchen > Tableware > Dinner Plates",
        ("Dinner Plate Set", "Plates"),
        "餐盘",
        {"material": ("Ceramic", "Porcelain", "Bamboo", "Glass")},
    ),
    (
        "Home & Kitchen > Bedding > Duvet Covers",
        ("Duvet Cover", "Quilt Cover"),
        "被套",
        {"material": ("Cotton", "Linen", "Organic Cotton", "Silk")},
    ),
    (
        "Home & Kitchen > Bedding > Pillows",
        ("Pillow", "Sleeping Pillow"),
        "枕头",
        {"material": ("Memory Foam", "Down", "Cotton", "Bamboo")},
    ),
    (
        "Home & Kitchen > Storage > Food Containers",
        ("Food Storage Containers", "Lunch Box"),
        "保鲜盒",
        {"material": ("Glass", "Plastic", "Stainless Steel", "Bamboo")},
    ),
    (
        "Home & Kitchen > Home Decor > Candles",
        ("Scented Candle", "Candle"),
        "香薰蜡烛",
        {"material": ("Soy Wax", "Beeswax", "Glass")},
    ),
    # Clothing
    (
        "Clothing > Women > Tops > T-Shirts",
        ("Women's T-Shirt", "Tee"),
        "女士T恤",
        {"material": ("Cotton", "Organic Cotton", "Polyester", "Linen")},
    ),
    (
        "Clothing > Women > Tops > Blouses",
        ("Women's Blouse", "Blouse"),
        "女士衬衫",
        {"material": ("Polyester", "Silk", "Linen", "Cotton")},
    ),
    (
        "Clothing > Women > Dresses",
        ("Dress", "Midi Dress"),
        "连衣裙",
        {"material": ("Cotton", "Polyester", "Linen", "Silk")},
    ),
    (
        "Clothing > Women > Outerwear > Jackets",
        ("Women's Jacket", "Jacket"),
        "女士外套",
        {"material": ("Polyester", "Wool", "Denim", "Leather")},
    ),
    (
        "Clothing > Men > Tops > T-Shirts",
        ("Men's T-Shirt", "Tee"),
        "男士T恤",
        {"material": ("Cotton", "Organic Cotton", "Polyester")},
    ),
    (
        "Clothing > Men > Tops > Polo Shirts",
        ("Men's Polo Shirt", "Polo Shirt"),
        "男士Polo衫",
        {"material": ("Cotton", "Polyester")},
    ),
    (
        "Clothing > Men > Pants > Jeans",
        ("Men's Jeans", "Jeans"),
        "男士牛仔裤",
        {"material": ("Denim", "Organic Cotton")},
    ),
    (
        "Clothing > Men > Pants > Chinos",
        ("Men's Chinos", "Chino Pants"),
        "男士休闲裤",
        {"material": ("Cotton", "Linen")},
    ),
    (
        "Clothing > Men > Outerwear > Down Jackets",
        ("Down Jacket", "Puffer Jacket"),
        "羽绒服",
        {"material": ("Nylon", "Polyester", "Down")},
    ),
    (
        "Clothing > Kids > Pajamas",
        ("Kids' Pajama Set", "Pajamas"),
        "儿童睡衣",
        {"material": ("Cotton", "Organic Cotton", "Fleece")},
    ),
    (
        "Clothing > Accessories > Scarves",
        ("Scarf", "Knit Scarf"),
        "围巾",
        {"size": None, "material": ("Wool", "Cashmere", "Silk", "Acrylic")},
    ),
    (
        "Clothing > Accessories > Hats",
        ("Beanie", "Hat"),
        "帽子",
        {"size": None, "material": ("Wool", "Acrylic", "Cotton")},
    ),
    (
        "Clothing > Shoes > Sneakers",
        ("Sneakers", "Running Shoes"),
        "运动鞋",
        {"size": "shoe", "material": ("Mesh", "Leather", "Recycled Plastic")},
    ),
    (
        "Clothing > Shoes > Boots",
        ("Boots", "Ankle Boots"),
        "靴子",
        {"size": "shoe", "material": ("Leather", "Suede")},
    ),
    # Sports
    (
        "Sports > Fitness > Yoga Mats",
        ("Yoga Mat", "Exercise Mat"),
        "瑜伽垫",
        {"size": None, "material": ("Foam", "Rubber", "Cork", "TPE")},
    ),
    (
        "Sports > Fitness > Dumbbells",
        ("Dumbbell Set", "Dumbbells"),
        "哑铃",
        {"size": None, "material": ("Cast Iron", "Rubber", "Neoprene")},
    ),
    (
        "Sports > Fitness > Resistance Bands",
        ("Resistance Bands", "Workout Bands"),
        "弹力带",
        {"size": None, "material": ("Latex", "Fabric")},
    ),
    (
        "Sports > Cycling > Bike Helmets",
        ("Bike Helmet", "Cycling Helmet"),
        "骑行头盔",
        {"material": ("Polycarbonate", "EPS Foam")},
    ),
    (
        "Sports > Cycling > Bike Lights",
        ("Bike Light", "Bicycle Lamp"),
        "自行车灯",
        {"size": None, "material": ("Aluminum", "Plastic")},
    ),
    (
        "Sports > Camping & Hiking > Tents",
        ("Camping Tent", "Tent"),
        "帐篷",
        {"size": None, "material": ("Polyester", "Nylon")},
    ),
    (
        "Sports > Camping & Hiking > Sleeping Bags",
        ("Sleeping Bag", "Mummy Bag"),
        "睡袋",
        {"size": None, "material": ("Polyester", "Down")},
    ),
    (
        "Sports > Camping & Hiking > Backpacks > Daypacks",
        ("Daypack", "Hiking Backpack"),
        "双肩包",
        {"material": ("Nylon", "Polyester", "Recycled Plastic")},
    ),
    (
        "Sports > Camping & Hiking > Backpacks > Trekking Packs",
        ("Trekking Backpack", "Trekking Pack"),
        "登山包",
        {"material": ("Nylon", "Polyester")},
    ),
    (
        "Sports > Team Sports > Soccer Balls",
        ("Soccer Ball", "Football"),
        "足球",
        {"size": None, "material": ("Leather", "Rubber")},
    ),
    (
        "Sports > Racket Sports > Badminton",
        ("Badminton Racket", "Badminton Set"),
        "羽毛球拍",
        {"size": None, "material": ("Carbon Fiber", "Aluminum")},
    ),
    (
        "Sports > Racket Sports > Table Tennis",
        ("Table Tennis Paddle", "Ping Pong Paddle"),
        "乒乓球拍",
        {"size": None, "material": ("Wood", "Carbon Fiber")},
    ),
    (
        "Sports > Swimming > Goggles",
        ("Swim Goggles", "Goggles"),
        "泳镜",
        {"size": None, "material": ("Silicone", "Polycarbonate")},
    ),
    # Beauty
    ("Beauty > Skincare > Moisturizers", ("Moisturizer", "Face Cream"), "面霜", {}),
    ("Beauty > Skincare > Cleansers", ("Facial Cleanser", "Face Wash"), "洁面乳", {}),
    ("Beauty > Skincare > Sunscreen", ("Sunscreen SPF 50", "Sunscreen"), "防晒霜", {}),
    ("Beauty > Skincare > Serums", ("Face Serum", "Serum"), "精华液", {}),
    ("Beauty > Makeup > Lipstick", ("Lipstick", "Matte Lipstick"), "口红", {"skin": None}),
    ("Beauty > Makeup > Foundation", ("Liquid Foundation", "Foundation"), "粉底液", {}),
    ("Beauty > Makeup > Mascara", ("Mascara", "Volume Mascara"), "睫毛膏", {"skin": None}),
    ("Beauty > Hair Care > Shampoo", ("Shampoo", "Hair Shampoo"), "洗发水", {"skin": None}),
    (
        "Beauty > Hair Care > Hair Dryers",
        ("Hair Dryer", "Blow Dryer"),
        "吹风机",
        {"skin": None, "scent": None},
    ),
    ("Beauty > Fragrance > Perfume", ("Eau de Parfum", "Perfume"), "香水", {"skin": None}),
    # Books
    ("Books > Fiction > Mystery", ("Mystery Novel", "Detective Novel"), "悬疑小说", {}),
    (
        "Books > Fiction > Science Fiction",
        ("Science Fiction Novel", "Sci-Fi Novel"),
        "科幻小说",
        {},
    ),
    ("Books > Fiction > Romance", ("Romance Novel", "Love Story"), "言情小说", {}),
    (
        "Books > Children's Books > Picture Books",
        ("Picture Book", "Illustrated Story"),
        "绘本",
        {"age": "kids"},
    ),
    (
        "Books > Children's Books > Early Readers",
        ("Early Reader", "Beginner Reader"),
        "儿童读物",
        {"age": "kids"},
    ),
    ("Books > Nonfiction > Cookbooks", ("Cookbook", "Recipe Book"), "菜谱", {}),
    ("Books > Nonfiction > Biographies", ("Biography", "Memoir"), "人物传记", {}),
    ("Books > Nonfiction > Self-Help", ("Self-Help Book", "Personal Growth Guide"), "自我提升", {}),
    ("Books > Education > Language Learning", ("Language Workbook", "Phrasebook"), "语言学习", {}),
    ("Books > Comics & Manga", ("Manga Volume", "Graphic Novel"), "漫画", {}),
    # Garden
    ("Garden > Plants & Seeds > Vegetable Seeds", ("Vegetable Seed Kit", "Seeds"), "蔬菜种子", {}),
    ("Garden > Plants & Seeds > Flower Bulbs", ("Flower Bulbs", "Tulip Bulbs"), "花卉种球", {}),
    (
        "Garden > Garden Tools > Pruners",
        ("Pruning Shears", "Pruner"),
        "修枝剪",
        {"material": ("Steel", "Stainless Steel", "Aluminum")},
    ),
    (
        "Garden > Garden Tools > Shovels",
        ("Garden Shovel", "Spade"),
        "铁锹",
        {"material": ("Steel", "Aluminum", "Wood")},
    ),
    (
        "Garden > Watering > Hoses",
        ("Garden Hose", "Expandable Hose"),
        "浇水软管",
        {"material": ("Rubber", "Plastic", "Latex")},
    ),
    (
        "Garden > Watering > Sprinklers",
        ("Lawn Sprinkler", "Sprinkler"),
        "喷灌器",
        {"material": ("Plastic", "Brass", "Metal")},
    ),
    (
        "Garden > Outdoor Furniture > Patio Chairs",
        ("Patio Chair", "Garden Chair"),
        "户外椅",
        {"material": ("Wood", "Aluminum", "Rattan", "Recycled Plastic")},
    ),
    (
        "Garden > Outdoor Furniture > Hammocks",
        ("Hammock", "Hanging Hammock"),
        "吊床",
        {"material": ("Cotton", "Polyester", "Nylon")},
    ),
    (
        "Garden > Planters > Raised Beds",
        ("Raised Garden Bed", "Planter Box"),
        "种植箱",
        {"material": ("Wood", "Steel", "Cedar")},
    ),
    (
        "Garden > Planters > Pots",
        ("Plant Pot", "Planter"),
        "花盆",
        {"material": ("Terracotta", "Ceramic", "Plastic", "Recycled Plastic")},
    ),
)
LEAVES: tuple[str, ...] = tuple(spec[0] for spec in _LEAF_SPECS)

# Department -> brands as (English name, Chinese name or None), most popular first.
BRANDS: dict[str, tuple[tuple[str, str | None], ...]] = {
    "Toys": (
        ("Brickton", "砖趣"),
        ("Playwell", "乐玩"),
        ("TinyTots", "小童星"),
        ("Puzzlewood", "拼木坊"),
        ("Zoomi", "酷米"),
        ("Kiddo Craft", None),
        ("Little Oak", None),
        ("Starbound Toys", None),
        ("Cuddle Co", None),
        ("Gamenight", None),
        ("Wobblewood", None),
        ("Pipsqueak Play", None),
        ("Tumble Town", None),
        ("Marble Bay", None),
        ("Kitekraft", None),
        ("Funfolk", None),
    ),
    "Electronics": (
        ("Voltix", "沃力"),
        ("Auralis", "声悦"),
        ("Pixelon", "像素龙"),
        ("Arcwave", "弧光"),
        ("Kepler Tech", None),
        ("Lumio", None),
        ("Bitforge", None),
        ("Sonara", "声纳拉"),
        ("Zentra", None),
        ("Orbit Labs", None),
        ("Quanta Gear", None),
        ("Helio Audio", None),
        ("Nimbus Devices", None),
        ("Coreline", None),
        ("Tesselate", None),
        ("Ampere Box", None),
    ),
    "Home & Kitchen": (
        ("Hearthly", "暖居"),
        ("Kitchara", "厨友"),
        ("Copperleaf", None),
        ("Nordhaus", None),
        ("Bamboo Lane", "竹间"),
        ("Casa Lumen", None),
        ("Ironridge", None),
        ("Dreamloft", "梦阁"),
        ("Mugsy", None),
        ("Pantry Pro", None),
        ("Olive & Oak", None),
        ("Simmerly", None),
        ("Glazeworks", None),
        ("Homestead Goods", None),
        ("Crumb & Co", None),
        ("Linenly", None),
    ),
    "Clothing": (
        ("Northtrail", "北径"),
        ("Urban Thread", None),
        ("Linea", "线条"),
        ("Maple & Moss", None),
        ("Cozyknit", "暖织"),
        ("Denimworks", None),
        ("Fieldwear", None),
        ("Petit Pas", "小步"),
        ("Stride Lab", None),
        ("Velour Lane", None),
        ("Weft & Warp", None),
        ("Harbor Knit", None),
        ("Blue Yonder", None),
        ("Tidy Tailor", None),
        ("Saltmarsh", None),
        ("Ember Apparel", None),
    ),
    "Sports": (
        ("Peakform", "巅峰"),
        ("Trailhead Gear", None),
        ("Zenflex", "禅柔"),
        ("Aquafin", "水鳍"),
        ("Velocity Sports", None),
        ("Summit Ridge", None),
        ("Pedalon", "骑乐"),
        ("Courtside", None),
        ("Ironpulse", None),
        ("Basecamp Co", None),
        ("Aerostride", None),
        ("Riverrun", None),
        ("Bolt Athletics", None),
        ("Glide Co", None),
        ("Cliffside", None),
        ("Netpoint", None),
    ),
    "Beauty": (
        ("Lumiere Skin", "光肌"),
        ("Pure Petal", "纯瓣"),
        ("Glowe", "焕颜"),
        ("Rosewater Lab", None),
        ("Dewdrop", "露珠"),
        ("Velvet Bloom", None),
        ("Aurelia", None),
        ("Botanica Lane", None),
        ("Silkair", None),
        ("Noir Atelier", None),
        ("Moss & Mineral", None),
        ("Clearpath Skin", None),
        ("Honeyed", None),
        ("Petalwise", None),
        ("Luxe Theory", None),
        ("Saltbloom", None),
    ),
    "Books": (
        ("Harbor House Press", "港湾出版社"),
        ("Lantern Books", "灯塔图书"),
        ("Quillmark", None),
        ("Bluepine Publishing", None),
        ("Paper Crane", "纸鹤"),
        ("Inkwell & Co", None),
        ("Meridian Press", None),
        ("Little Owl Books", "小猫头鹰"),
        ("Starfield Comics", None),
        ("Open Road Readers", None),
        ("Cobblestone Press", None),
        ("Thistle Books", None),
        ("Tidewater Editions", None),
        ("Moonlit Pages", None),
        ("Atlas Reads", None),
        ("Brightline Press", None),
    ),
    "Garden": (
        ("Greenthumb", "绿手指"),
        ("Sproutly", "萌芽"),
        ("Terra Garden", None),
        ("Bloomfield", None),
        ("Sunpatch", "阳光田"),
        ("Rootwise", None),
        ("Hedgerow", None),
        ("Pebble & Fern", None),
        ("Raindance", None),
        ("Willowbrook", None),
        ("Fernwood", None),
        ("Mossgrove", None),
        ("Dewpoint Garden", None),
        ("Thornbury", None),
        ("Acorn & Ash", None),
        ("Bramble Tools", None),
    ),
}

# Indie brands (prefix + suffix) model the long tail of small sellers.
_INDIE_PREFIXES = (
    "Amber",
    "Birch",
    "Cedar",
    "Dune",
    "Ember",
    "Fable",
    "Hazel",
    "Indigo",
    "Juniper",
    "Kestrel",
    "Lark",
    "Meadow",
    "Nettle",
    "Opal",
    "Quill",
    "Ripple",
    "Sable",
    "Tansy",
)
_INDIE_SUFFIXES = (
    " Studio",
    "craft",
    " & Sons",
    " Goods",
    " Works",
    " Supply",
    " Atelier",
    " Market",
)

_COLORS = (
    "Black",
    "White",
    "Blue",
    "Red",
    "Grey",
    "Green",
    "Pink",
    "Beige",
    "Yellow",
    "Navy",
    "Purple",
    "Orange",
    "Teal",
    "Burgundy",
    "Mint",
    "Coral",
    "Olive",
    "Lilac",
    "Mustard",
)
_SIZES = ("M", "L", "S", "XL", "XS", "XXL")
_SHOE_SIZES = ("42", "40", "41", "39", "43", "38", "44", "37", "45", "46")
_AGES = ("3+", "6+", "8+", "0+", "12+", "14+")
_KID_AGES = ("3+", "0+", "6+", "5+")
_ECO_MATERIALS = frozenset(
    {
        "Bamboo",
        "Organic Cotton",
        "Recycled Plastic",
        "Cork",
        "Linen",
        "Soy Wax",
        "Beeswax",
        "Rattan",
    }
)
# Department -> probability that a product of a leaf with materials carries a material facet.
_MATERIAL_PROB = {"Toys": 0.5, "Home & Kitchen": 0.75, "Clothing": 0.55, "Sports": 0.45}

# Facet name -> (probability that a product carries it, values most popular first).
_DEPT_FACETS: dict[str, dict[str, tuple[float, tuple[str, ...]]]] = {
    "Toys": {
        "age": (0.85, _AGES),
        "color": (0.4, _COLORS[:10]),
    },
    "Electronics": {
        "color": (0.7, ("Black", "White", "Silver", "Blue", "Space Grey", "Rose Gold", "Green")),
        "connectivity": (0.5, ("Bluetooth", "Wi-Fi", "USB-C", "2.4 GHz", "NFC")),
    },
    "Home & Kitchen": {
        "color": (0.55, _COLORS),
    },
    "Clothing": {
        "size": (0.9, _SIZES),
        "color": (0.85, _COLORS),
    },
    "Sports": {
        "color": (0.65, _COLORS[:12]),
        "size": (0.5, _SIZES[:5]),
    },
    "Beauty": {
        "skin": (0.6, ("All", "Dry", "Oily", "Sensitive", "Combination")),
        "scent": (0.35, ("Unscented", "Rose", "Lavender", "Citrus", "Vanilla", "Sandalwood")),
    },
    "Books": {
        "format": (0.95, ("Paperback", "Hardcover", "eBook", "Audiobook", "Board Book")),
        "language": (0.7, ("English", "Chinese", "Spanish", "French", "Japanese")),
    },
    "Garden": {
        "color": (0.45, ("Green", "Black", "Grey", "Brown", "Terracotta", "White")),
    },
}

_ZH_VALUES: dict[str, str] = {
    "Black": "黑色",
    "White": "白色",
    "Blue": "蓝色",
    "Red": "红色",
    "Grey": "灰色",
    "Green": "绿色",
    "Pink": "粉色",
    "Beige": "米色",
    "Yellow": "黄色",
    "Navy": "藏青色",
    "Purple": "紫色",
    "Orange": "橙色",
    "Teal": "青色",
    "Burgundy": "酒红色",
    "Mint": "薄荷绿",
    "Coral": "珊瑚色",
    "Olive": "橄榄绿",
    "Lilac": "淡紫色",
    "Mustard": "芥末黄",
    "Silver": "银色",
    "Space Grey": "深空灰",
    "Rose Gold": "玫瑰金",
    "Brown": "棕色",
    "Terracotta": "陶土色",
    "Plastic": "塑料",
    "Wood": "实木",
    "Plush": "毛绒",
    "Cardboard": "纸质",
    "Recycled Plastic": "再生塑料",
    "Metal": "金属",
    "Stainless Steel": "不锈钢",
    "Ceramic": "陶瓷",
    "Glass": "玻璃",
    "Cotton": "纯棉",
    "Cast Iron": "铸铁",
    "Bamboo": "竹制",
    "Linen": "亚麻",
    "Polyester": "涤纶",
    "Wool": "羊毛",
    "Denim": "牛仔布",
    "Organic Cotton": "有机棉",
    "Silk": "真丝",
    "Nylon": "尼龙",
    "Rubber": "橡胶",
    "Foam": "泡棉",
    "Cork": "软木",
    "Aluminum": "铝合金",
    "Steel": "钢制",
    "Silicone": "硅胶",
    "Leather": "皮革",
    "Vinyl": "搪胶",
    "Enamel": "搪瓷",
    "Porcelain": "骨瓷",
    "Memory Foam": "记忆棉",
    "Down": "羽绒",
    "Soy Wax": "大豆蜡",
    "Beeswax": "蜂蜡",
    "Fleece": "摇粒绒",
    "Cashmere": "羊绒",
    "Acrylic": "腈纶",
    "Mesh": "网面",
    "Suede": "麂皮",
    "TPE": "TPE",
    "Neoprene": "氯丁橡胶",
    "Latex": "乳胶",
    "Fabric": "布艺",
    "Polycarbonate": "PC",
    "EPS Foam": "EPS泡沫",
    "Carbon Fiber": "碳纤维",
    "Brass": "黄铜",
    "Rattan": "藤编",
    "Cedar": "雪松木",
    "Bluetooth": "蓝牙",
    "Wi-Fi": "WiFi",
    "All": "所有肤质",
    "Dry": "干性肌肤",
    "Oily": "油性肌肤",
    "Sensitive": "敏感肌",
    "Combination": "混合性肌肤",
    "Unscented": "无香",
    "Rose": "玫瑰香",
    "Lavender": "薰衣草",
    "Citrus": "柑橘香",
    "Vanilla": "香草",
    "Sandalwood": "檀香",
    "Paperback": "平装",
    "Hardcover": "精装",
    "eBook": "电子书",
    "Audiobook": "有声书",
    "Board Book": "纸板书",
    "English": "英文版",
    "Chinese": "中文版",
    "Spanish": "西班牙语版",
    "French": "法语版",
    "Japanese": "日文版",
}

_ADJECTIVES: dict[str, tuple[str, ...]] = {
    "Toys": ("Classic", "Educational", "Colorful", "Deluxe", "Creative", "Mini", "Jumbo"),
    "Electronics": ("Pro", "Ultra-Slim", "Noise-Cancelling", "Compact", "Smart", "Premium", "Lite"),
    "Home & Kitchen": ("Nonstick", "Premium", "Compact", "Modern", "Classic", "Heavy-Duty", "Cozy"),
    "Clothing": ("Slim Fit", "Relaxed", "Classic", "Lightweight", "Vintage", "Oversized", "Cozy"),
    "Sports": (
        "Lightweight",
        "Pro",
        "Durable",
        "Waterproof",
        "Ultralight",
        "Training",
        "Anti-Slip",
    ),
    "Beauty": ("Hydrating", "Gentle", "Long-Lasting", "Radiant", "Daily", "Nourishing", "Matte"),
    "Books": (
        "Acclaimed",
        "Illustrated",
        "Complete",
        "Annotated",
        "Collector's",
        "Pocket",
        "Revised",
    ),
    "Garden": (
        "Heavy-Duty",
        "Rust-Proof",
        "Weatherproof",
        "Ergonomic",
        "Foldable",
        "Rustic",
        "Compact",
    ),
}
_ZH_ADJECTIVES: dict[str, tuple[str, ...]] = {
    "Toys": ("益智", "经典", "儿童", "创意", "大颗粒"),
    "Electronics": ("旗舰", "降噪", "轻薄", "智能", "高清"),
    "Home & Kitchen": ("不粘", "家用", "大容量", "北欧风", "加厚"),
    "Clothing": ("修身", "宽松", "百搭", "休闲", "加绒"),
    "Sports": ("专业", "轻量", "防滑", "防水", "户外"),
    "Beauty": ("补水", "温和", "持久", "保湿", "清爽"),
    "Books": ("畅销", "插图版", "完整版", "典藏版", "口袋本"),
    "Garden": ("加厚", "防锈", "庭院", "折叠", "耐用"),
}
_ZH_SERIES = ("经典系列", "城市系列", "Pro系列", "Lite系列", "青春系列", "旗舰系列")
_DETAILS: dict[str, tuple[str, ...]] = {
    "Toys": ("for Kids", "STEM Learning Toy", "Family Fun", "Party Favorite", "Toddler Safe"),
    "Electronics": ("40H Battery Life", "Fast Charging", "Dual Mic", "with Carrying Case", "HD"),
    "Home & Kitchen": ("Easy to Clean", "Space Saving", "Modern Design", "1-Year Warranty"),
    "Clothing": ("Everyday Wear", "Machine Washable", "Regular Fit", "All Season", "Soft Touch"),
    "Sports": ("for Outdoor Training", "Carry Bag Included", "All Weather", "for Beginners"),
    "Beauty": ("Salon Quality", "Dermatologist Tested", "Travel Size", "Cruelty-Free"),
    "Books": ("Book 1 of Series", "Illustrated Edition", "Large Print", "Anniversary Edition"),
    "Garden": ("for Backyard and Patio", "UV Resistant", "Easy Assembly", "All Season Use"),
}
_ZH_DETAILS = ("包邮", "正品保障", "现货速发", "限时特惠", "官方旗舰店")
_GENERIC_NOUNS: dict[str, tuple[str, ...]] = {
    "Toys": ("Toy", "Play Set"),
    "Electronics": ("Gadget", "Device"),
    "Home & Kitchen": ("Kitchen Essential", "Home Item"),
    "Clothing": ("Apparel", "Basics"),
    "Sports": ("Gear", "Equipment"),
    "Beauty": ("Beauty Essential", "Care Kit"),
    "Books": ("Book", "Edition"),
    "Garden": ("Garden Essential", "Outdoor Item"),
}
_EMOJI: dict[str, tuple[str, ...]] = {
    "Toys": ("🧸", "🎲", "🧩", "🚂"),
    "Electronics": ("⚡", "🎧", "📱", "🔋"),
    "Home & Kitchen": ("☕", "🍳", "🏠", "🕯️"),
    "Clothing": ("👕", "👗", "🧣", "👟"),
    "Sports": ("⚽", "🏀", "🚴", "⛺"),
    "Beauty": ("✨", "💄", "🌸", "💧"),
    "Books": ("📚", "📖", "🔖"),
    "Garden": ("🌱", "🌻", "🌿", "🪴"),
}
_BOOK_TITLE_WORDS = (
    ("The Silent", "The Quiet", "The Hidden", "A Winter", "The Glass", "Beyond the", "The Paper"),
    ("Harbor", "Garden", "Orbit", "Lantern", "River", "Kingdom", "Letters", "Island", "Kitchen"),
)

# Free keyword -> (base probability, department boosts, English cues, Chinese cues).
_KEYWORDS: dict[str, tuple[float, dict[str, float], tuple[str, ...], tuple[str, ...]]] = {
    "gift": (
        0.08,
        {"Toys": 0.18, "Beauty": 0.2, "Books": 0.1},
        ("Gift Set", "Gift Box", "Perfect Gift"),
        ("礼盒装", "送礼佳品"),
    ),
    "bestseller": (0.07, {}, ("Best Seller", "#1 Bestselling", "Top Rated"), ("爆款", "热销")),
    "new-arrival": (0.06, {"Electronics": 0.1}, ("New 2025", "New Arrival"), ("2025新款", "新品")),
    "handmade": (
        0.0,
        {"Home & Kitchen": 0.05, "Clothing": 0.04, "Toys": 0.03},
        ("Handmade", "Hand-Crafted"),
        ("手工制作",),
    ),
    "limited-edition": (0.015, {}, ("Limited Edition",), ("限量版",)),
}
_ECO_CUES = ("Eco-Friendly", "Sustainable", "Plastic-Free")

_USAGE: dict[str, tuple[str, ...]] = {
    "Toys": (
        "Encourages creativity, fine motor skills and hours of screen-free play.",
        "Rounded edges and non-toxic paint make it safe for little hands.",
    ),
    "Electronics": (
        "Pairs in seconds and keeps a stable connection across the room.",
        "The long-lasting battery gets you through a full day of use.",
    ),
    "Home & Kitchen": (
        "Designed for busy kitchens and everyday family meals.",
        "Wipes clean in seconds and stores away neatly.",
    ),
    "Clothing": (
        "A relaxed cut that pairs well with jeans or chinos.",
        "Breathable fabric keeps you comfortable from morning to night.",
    ),
    "Sports": (
        "Built for training sessions, weekend trips and everything in between.",
        "Tested by athletes in rain, heat and mud.",
    ),
    "Beauty": (
        "Apply morning and evening on clean skin for best results.",
        "A lightweight texture that absorbs quickly without a greasy feel.",
    ),
    "Books": (
        "A page-turner that readers finish in a single weekend.",
        "Praised by critics for its vivid characters and sharp writing.",
    ),
    "Garden": (
        "Makes backyard work faster and easier in every season.",
        "Stands up to sun, rain and frost year after year.",
    ),
}
_ZH_USAGE = (
    "品质可靠，做工精细。",
    "适合日常使用，性价比高。",
    "多种款式可选，欢迎选购。",
    "七天无理由退换。",
)
_BOILERPLATE = (
    "Please check the size chart and product dimensions carefully before ordering.",
    "Colors may vary slightly due to monitor settings and lighting conditions.",
    "All items are inspected by our quality team before they leave the warehouse.",
    "Orders placed before 2 pm ship the same business day; delivery usually takes 3-5 days.",
    "If you are not completely satisfied, return the item within 30 days for a full refund.",
    "Our customer service team is available seven days a week to answer your questions.",
    "Keep away from open flames and store in a cool, dry place out of direct sunlight.",
    "Package contents may differ slightly from the photos as we keep improving our products.",
    "Register your product online to extend the warranty by an additional twelve months.",
    "Clean with a soft damp cloth; do not use abrasive cleaners or bleach.",
)

_DEPARTMENT_ZIPF_S = 0.6
_CATEGORY_ZIPF_S = 1.3
_BRAND_ZIPF_S = 1.5
_VALUE_ZIPF_S = 1.1
_CHINESE_SHARE = 0.15
_INDIE_BRAND_SHARE = 0.06


# --------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------


def _zipf_cum_weights(n: int, s: float, q: float = 0.0) -> list[float]:
    """Cumulative Zipf(-Mandelbrot) weights ``1 / (rank + q)**s`` for ranks ``1..n``."""
    return list(accumulate(1.0 / ((rank + q) ** s) for rank in range(1, n + 1)))


def _pick(rng: random.Random, items: tuple[Any, ...] | list[Any], cum: list[float]) -> Any:
    """Draw one item with precomputed cumulative weights (one ``rng.random()`` call)."""
    return items[min(bisect(cum, rng.random() * cum[-1]), len(items) - 1)]


def _path_prefixes(path: str) -> list[str]:
    """``"A > B > C"`` -> ``["A", "A > B", "A > B > C"]``."""
    parts = path.split(" > ")
    return [" > ".join(parts[: i + 1]) for i in range(len(parts))]


def brand_aliases() -> dict[str, tuple[str, ...]]:
    """Map each ``brand:<Brand>`` tag to the strings that name the brand in titles."""
    return {
        f"brand:{en}": (en, zh) if zh else (en,) for brands in BRANDS.values() for en, zh in brands
    }


class _Generator:
    """Precomputed sampling tables; :meth:`product` draws one product from a shared rng."""

    def __init__(self) -> None:
        # Category popularity: walk down the hierarchy, picking a child with Zipf weights at
        # every level.  Child ranks are a fixed permutation (independent of the seed) so the
        # catalog's shape -- which categories are head and which are tail -- is stable.
        self.specs = {spec[0]: spec for spec in _LEAF_SPECS}
        children: dict[str, list[str]] = {}
        for path in self.specs:
            parent = ""
            for prefix in _path_prefixes(path):
                siblings = children.setdefault(parent, [])
                if prefix not in siblings:
                    siblings.append(prefix)
                parent = prefix
        popularity = random.Random("labelrec-demo-category-popularity")
        for siblings in children.values():
            popularity.shuffle(siblings)
        self.children = children
        self.children_cum = {
            node: _zipf_cum_weights(len(kids), _DEPARTMENT_ZIPF_S if not node else _CATEGORY_ZIPF_S)
            for node, kids in children.items()
        }
        self.brand_cum = {d: _zipf_cum_weights(len(b), _BRAND_ZIPF_S) for d, b in BRANDS.items()}
        self.value_cum: dict[int, list[float]] = {}

    def _value(self, rng: random.Random, values: tuple[str, ...]) -> str:
        cum = self.value_cum.get(len(values))
        if cum is None:
            cum = self.value_cum[len(values)] = _zipf_cum_weights(len(values), _VALUE_ZIPF_S)
        return _pick(rng, values, cum)

    def _facets(self, rng: random.Random, dept: str, overrides: dict[str, Any]) -> dict[str, str]:
        facets: dict[str, str] = {}
        for name, (prob, values) in _DEPT_FACETS[dept].items():
            override = overrides.get(name, values)
            if override is None:
                continue
            if rng.random() < prob:
                facets[name] = self._value(rng, _SHOE_SIZES if override == "shoe" else override)
        materials = overrides.get("material")
        if materials and rng.random() < _MATERIAL_PROB.get(dept, 0.6):
            facets["material"] = self._value(rng, materials)
        if overrides.get("age") == "kids" and rng.random() < 0.9:  # children's books
            facets["age"] = self._value(rng, _KID_AGES)
        return facets

    def product(self, rng: random.Random, index: int) -> dict[str, Any]:
        node = ""
        while node not in self.specs:
            node = _pick(rng, self.children[node], self.children_cum[node])
        path, nouns, noun_zh, overrides = self.specs[node]
        dept = path.split(" > ", 1)[0]
        chinese = rng.random() < _CHINESE_SHARE

        brand_en: str | None = None
        brand_zh: str | None = None
        r = rng.random()
        if r < _INDIE_BRAND_SHARE:  # small marketplace sellers: a long tail of one-off brands
            brand_en = rng.choice(_INDIE_PREFIXES) + rng.choice(_INDIE_SUFFIXES)
        elif r < 0.93:
            brand_en, brand_zh = _pick(rng, BRANDS[dept], self.brand_cum[dept])
        facets = self._facets(rng, dept, overrides)

        # Free keywords: decide the tag first, then usually (not always) put a cue in the text.
        keywords: list[str] = []
        for kw, (base, boosts, _, _) in _KEYWORDS.items():
            if rng.random() < boosts.get(dept, base):
                keywords.append(kw)
        eco_material = facets.get("material") in _ECO_MATERIALS
        if rng.random() < (0.55 if eco_material else 0.03):
            keywords.append("eco-friendly")

        title_cues: list[str] = []
        desc_cues: list[str] = []
        for kw in keywords:
            if rng.random() < 0.12:  # tag without any textual cue (label noise)
                continue
            if kw == "eco-friendly":
                cue = rng.choice(("环保",) if chinese else _ECO_CUES)
            else:
                cue = rng.choice(_KEYWORDS[kw][3] if chinese else _KEYWORDS[kw][2])
            (title_cues if rng.random() < 0.7 else desc_cues).append(cue)
        if rng.random() < 0.04:  # cue without the tag (noise)
            kw = rng.choice(list(_KEYWORDS))
            title_cues.append(rng.choice(_KEYWORDS[kw][3] if chinese else _KEYWORDS[kw][2]))

        noun = nouns[0] if rng.random() < 0.7 else nouns[1]
        if rng.random() < 0.06:  # vague title: generic noun instead of the product noun
            noun = rng.choice(_GENERIC_NOUNS[dept])
            noun_zh = "商品"

        if chinese:
            title = self._title_zh(rng, dept, brand_en, brand_zh, noun_zh, facets, title_cues)
            description = self._description_zh(rng, noun_zh, facets, desc_cues)
        else:
            title = self._title_en(rng, dept, brand_en, noun, facets, title_cues)
            description = self._description_en(rng, dept, brand_en, noun, facets, desc_cues)
        if rng.random() < 0.04:
            emoji = rng.choice(_EMOJI[dept])
            title = f"{emoji} {title}" if rng.random() < 0.5 else f"{title} {emoji}"

        tags = _path_prefixes(path)
        n_category_tags = len(tags)
        if brand_en is not None:
            tags.append(f"brand:{brand_en}")
            if chinese and brand_zh is not None:
                tags.append(f"品牌:{brand_zh}")
        tags.extend(f"{name}:{value}" for name, value in facets.items())
        tags.extend(keywords)
        if len(tags) > n_category_tags and rng.random() < 0.03:
            # Incomplete labelling: drop one non-category tag.
            del tags[rng.randrange(n_category_tags, len(tags))]
        return {
            "id": f"demo-{index:06d}",
            "title": title,
            "description": description,
            "tags": list(dict.fromkeys(tags)),
        }

    @staticmethod
    def _title_en(
        rng: random.Random,
        dept: str,
        brand: str | None,
        noun: str,
        facets: dict[str, str],
        cues: list[str],
    ) -> str:
        show_brand = brand is not None and rng.random() < 0.88
        adj = rng.choice(_ADJECTIVES[dept]) if rng.random() < 0.6 else ""
        pre = [facets[k] for k in ("color", "material") if k in facets and rng.random() < 0.7]
        post: list[str] = []
        if "size" in facets and rng.random() < 0.6:
            post.append(f"Size {facets['size']}")
        if "age" in facets and rng.random() < 0.7:
            post.append(f"for Ages {facets['age']}")
        if "format" in facets and rng.random() < 0.75:
            post.append(facets["format"])
        if "connectivity" in facets and rng.random() < 0.7:
            post.append(facets["connectivity"])
        if "scent" in facets and rng.random() < 0.6:
            post.append(f"{facets['scent']} Scent")
        if "skin" in facets and rng.random() < 0.5:
            post.append(f"for {facets['skin']} Skin")
        if "language" in facets and rng.random() < 0.4:
            post.append(f"{facets['language']} Edition")
        details = list(cues)
        if rng.random() < 0.6:
            details.append(rng.choice(_DETAILS[dept]))

        core = " ".join(w for w in (adj, *pre, noun) if w)
        attrs = " ".join(post)
        if dept == "Books":
            name = f"{rng.choice(_BOOK_TITLE_WORDS[0])} {rng.choice(_BOOK_TITLE_WORDS[1])}"
            head = f"{name}: {core}"
            if attrs:
                head += f" ({attrs})"
            if show_brand:
                head += f" - {brand}"
            return ", ".join([head, *details])
        template = rng.randrange(3)
        if template == 0 or not show_brand:
            head = " ".join(w for w in (brand if show_brand else "", core, attrs) if w)
        elif template == 1:
            head = f"{core} by {brand}" + (f" ({attrs})" if attrs else "")
        else:
            head = f"{brand} | {core}" + (f" - {attrs}" if attrs else "")
        return ", ".join([head, *details])

    @staticmethod
    def _title_zh(
        rng: random.Random,
        dept: str,
        brand_en: str | None,
        brand_zh: str | None,
        noun_zh: str,
        facets: dict[str, str],
        cues: list[str],
    ) -> str:
        parts: list[str] = []
        if brand_en is not None and rng.random() < 0.9:
            parts.append(brand_zh or brand_en)
        if rng.random() < 0.4:
            parts.append(rng.choice(_ZH_SERIES))
        if rng.random() < 0.6:
            parts.append(rng.choice(_ZH_ADJECTIVES[dept]))
        attr = "".join(
            _ZH_VALUES.get(facets[k], facets[k])
            for k in ("color", "material")
            if k in facets and rng.random() < 0.7
        )
        parts.append(attr + noun_zh)
        if "size" in facets and rng.random() < 0.6:
            parts.append(f"{facets['size']}码")
        if "age" in facets and rng.random() < 0.7:
            parts.append(f"适合{facets['age'].rstrip('+')}岁以上")
        for key in ("format", "connectivity", "scent", "skin", "language"):
            if key in facets and rng.random() < 0.6:
                parts.append(_ZH_VALUES.get(facets[key], facets[key]))
        parts.extend(cues)
        if rng.random() < 0.5:
            parts.append(rng.choice(_ZH_DETAILS))
        return " ".join(parts)

    @staticmethod
    def _description_en(
        rng: random.Random,
        dept: str,
        brand: str | None,
        noun: str,
        facets: dict[str, str],
        cues: list[str],
    ) -> str:
        n_sentences = rng.choices((0, 1, 2, 3), weights=(0.2, 0.3, 0.3, 0.2))[0]
        pool: list[str] = []
        if brand is not None:
            pool.append(f"The {noun.lower()} from {brand} is made for everyday use.")
        if "material" in facets:
            pool.append(f"Made from {facets['material'].lower()} for long-lasting quality.")
        if "color" in facets:
            pool.append(f"Available in {facets['color'].lower()} and other colors.")
        pool.extend(_USAGE[dept])
        rng.shuffle(pool)
        sentences = [*(f"{cue}." for cue in cues), *pool[:n_sentences]]
        if rng.random() < 0.025:  # a few very long descriptions
            boiler = list(_BOILERPLATE)
            rng.shuffle(boiler)
            sentences.extend(boiler * 2)
        return " ".join(sentences)

    @staticmethod
    def _description_zh(
        rng: random.Random, noun_zh: str, facets: dict[str, str], cues: list[str]
    ) -> str:
        n_sentences = rng.choices((0, 1, 2, 3), weights=(0.3, 0.3, 0.25, 0.15))[0]
        pool = list(_ZH_USAGE)
        if "material" in facets:
            mat = _ZH_VALUES.get(facets["material"], facets["material"])
            pool.append(f"这款{noun_zh}采用{mat}材质，经久耐用。")
        rng.shuffle(pool)
        return "".join([*(f"{cue}。" for cue in cues), *pool[:n_sentences]])


def generate_catalog(n_products: int = 2400, seed: int = 0) -> list[dict[str, Any]]:
    """Generate ``n_products`` demo products, deterministically for ``seed``.

    Each product is ``{"id": "demo-000123", "title": str, "description": str,
    "tags": list[str]}``; products are drawn in order, so a smaller catalog is a prefix of a
    larger one with the same seed.
    """
    if n_products < 0:
        raise ValueError(f"n_products must be >= 0, got {n_products}")
    rng = random.Random(seed)
    gen = _Generator()
    return [gen.product(rng, i) for i in range(n_products)]


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def write_catalog(products: list[dict[str, Any]], path: str | Path) -> Path:
    """Write products as JSON Lines (``.jsonl``/``.json``), Parquet or CSV (tags joined by "|")."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        with path.open("w", encoding="utf-8") as f:
            for product in products:
                f.write(json.dumps(product, ensure_ascii=False) + "\n")
    elif suffix == ".parquet":
        import pandas as pd

        columns = ("id", "title", "description", "tags")
        frame = pd.DataFrame({c: [p[c] for p in products] for c in columns})
        frame.to_parquet(path, index=False)
    elif suffix == ".csv":
        with path.open("w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(("id", "title", "description", "tags"))
            for p in products:
                writer.writerow((p["id"], p["title"], p["description"], "|".join(p["tags"])))
    else:
        raise ValueError(
            f"unsupported catalog extension {path.suffix!r} (jsonl, json, parquet, csv)"
        )
    return path


def split_of(product_id: str, valid_fraction: float = 0.15) -> str:
    """Deterministic split ("train" or "valid") from an MD5 hash of the product id."""
    bucket = int(hashlib.md5(product_id.encode("utf-8")).hexdigest(), 16) / float(1 << 128)
    return "valid" if bucket < valid_fraction else "train"


def write_demo(
    out_dir: str | Path,
    n_products: int = 2400,
    seed: int = 0,
    valid_fraction: float = 0.15,
) -> dict[str, Path]:
    """Generate the demo catalog and write ``train.jsonl`` / ``valid.jsonl`` into ``out_dir``."""
    if not 0.0 <= valid_fraction <= 1.0:
        raise ValueError(f"valid_fraction must be in [0, 1], got {valid_fraction}")
    products = generate_catalog(n_products, seed)
    parts: dict[str, list[dict[str, Any]]] = {"train": [], "valid": []}
    for product in products:
        parts[split_of(product["id"], valid_fraction)].append(product)
    out = Path(out_dir)
    return {name: write_catalog(items, out / f"{name}.jsonl") for name, items in parts.items()}


def catalog_stats(products: list[dict[str, Any]]) -> dict[str, Any]:
    """Summary statistics: products, distinct tags, long-tail size, Chinese-title share."""
    counts = Counter(tag for p in products for tag in p["tags"])
    chinese = sum(any("\u4e00" <= ch <= "\u9fff" for ch in p["title"]) for p in products)
    n = max(len(products), 1)
    return {
        "products": len(products),
        "tags": len(counts),
        "tags_lt5": sum(c < 5 for c in counts.values()),
        "max_tag_count": max(counts.values(), default=0),
        "mean_tags_per_product": sum(counts.values()) / n,
        "chinese_title_share": chinese / n,
        "empty_descriptions": sum(not p["description"] for p in products) / n,
    }


def main(argv: list[str] | None = None) -> None:
    """CLI: ``python -m labelrec.demo OUT_DIR [--n-products N] [--seed S]``."""
    parser = argparse.ArgumentParser(description="Write the synthetic demo catalog.")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--n-products", type=int, default=2400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--valid-fraction", type=float, default=0.15)
    args = parser.parse_args(argv)
    paths = write_demo(args.out_dir, args.n_products, args.seed, args.valid_fraction)
    print(json.dumps({k: str(v) for k, v in paths.items()}))
    print(json.dumps(catalog_stats(generate_catalog(args.n_products, args.seed)), indent=2))


if __name__ == "__main__":
    main()

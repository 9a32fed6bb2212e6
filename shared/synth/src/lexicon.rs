//! The word lists the generator draws from: the project's own, written for this purpose.

pub const EN_NOUNS: &[&str] = &[
    "river", "valley", "village", "harbor", "garden", "library", "market", "bridge", "mountain", "forest",
    "station", "museum", "school", "teacher", "student", "farmer", "engineer", "doctor", "painter", "writer",
    "committee", "council", "company", "factory", "kitchen", "recipe", "bicycle", "journey", "season", "winter",
    "summer", "harvest", "storm", "island", "coast", "lighthouse", "castle", "tower", "road", "railway",
    "machine", "engine", "battery", "network", "signal", "planet", "telescope", "orbit", "comet", "experiment",
    "theory", "method", "question", "answer", "problem", "solution", "report", "budget", "policy", "election",
    "festival", "concert", "orchestra", "melody", "novel", "chapter", "poem", "language", "dictionary", "letter",
    "neighbor", "family", "child", "grandmother", "friend", "stranger", "traveler", "captain", "sailor", "merchant",
    "window", "door", "roof", "wall", "field", "meadow", "orchard", "vineyard", "lake", "pond",
    "cloud", "wind", "rain", "snow", "sunlight", "shadow", "evening", "morning", "candle", "lantern",
    "museum guide", "city hall", "town square", "history", "culture", "economy", "climate", "energy", "water", "soil",
    "wheat", "rice", "apple", "bread", "cheese", "coffee", "tea", "honey", "salt", "spice",
];

pub const EN_VERBS_PAST: &[&str] = &[
    "crossed", "built", "repaired", "visited", "described", "measured", "painted", "explored", "studied", "opened",
    "closed", "carried", "followed", "discovered", "planted", "harvested", "collected", "observed", "recorded", "explained",
    "designed", "tested", "improved", "replaced", "moved", "watched", "remembered", "celebrated", "announced", "published",
    "questioned", "answered", "cleaned", "cooked", "sold", "bought", "shared", "lost", "found", "protected",
];

pub const EN_VERBS_PRESENT: &[&str] = &[
    "crosses", "builds", "repairs", "visits", "describes", "measures", "paints", "explores", "studies", "opens",
    "carries", "follows", "discovers", "plants", "collects", "observes", "records", "explains", "designs", "tests",
    "improves", "moves", "watches", "remembers", "celebrates", "shares", "protects", "feeds", "shapes", "connects",
];

pub const EN_ADJECTIVES: &[&str] = &[
    "old", "new", "quiet", "busy", "narrow", "wide", "ancient", "modern", "small", "large",
    "bright", "dark", "cold", "warm", "gentle", "strong", "careful", "patient", "curious", "famous",
    "hidden", "distant", "local", "northern", "southern", "eastern", "western", "green", "golden", "silver",
    "wooden", "stone", "simple", "complex", "useful", "rare", "common", "early", "late", "quick",
    "slow", "heavy", "light", "clear", "deep", "shallow", "fresh", "dry", "wet", "public",
];

pub const EN_ADVERBS: &[&str] = &[
    "slowly", "carefully", "quietly", "often", "rarely", "always", "sometimes", "finally", "suddenly", "gradually",
    "clearly", "easily", "together", "again", "early", "later", "usually", "recently", "nearly", "almost",
];

pub const EN_PREPOSITIONS: &[&str] = &["near", "behind", "across", "under", "above", "beside", "through", "around", "along", "beyond", "inside", "outside"];

pub const EN_CONNECTIVES: &[&str] = &[
    "However,", "Meanwhile,", "In the end,", "For many years,", "According to the report,", "At first,",
    "Later that year,", "As a result,", "In contrast,", "Most of all,", "Even so,", "By the spring,",
];

pub const EN_NAMES: &[&str] = &[
    "Anna", "Marco", "Lena", "Tomas", "Priya", "Jonas", "Sofia", "Daniel", "Mei", "Oskar", "Clara", "Hugo",
    "Ines", "Felix", "Nora", "Samuel", "Yara", "Victor", "Elsa", "Ruben",
];

pub const ZH_NOUNS: &[&str] = &[
    "城市", "河流", "学校", "老师", "学生", "山村", "天气", "时间", "工作", "生活", "经济", "文化", "历史", "科学", "技术",
    "问题", "方法", "农民", "工程师", "医生", "画家", "作家", "图书馆", "市场", "桥梁", "森林", "车站", "博物馆", "工厂", "厨房",
    "季节", "冬天", "夏天", "秋天", "春天", "岛屿", "海岸", "灯塔", "城堡", "道路", "铁路", "机器", "电池", "网络", "信号",
    "行星", "望远镜", "实验", "理论", "答案", "报告", "政策", "节日", "音乐会", "小说", "诗歌", "语言", "词典", "朋友", "家庭",
    "孩子", "邻居", "旅行者", "船长", "商人", "窗户", "田野", "果园", "湖泊", "云朵", "风雨", "阳光", "早晨", "傍晚", "茶叶",
    "米饭", "面包", "苹果", "蜂蜜", "土壤", "气候", "能源", "水源", "小麦", "竹林",
];

pub const ZH_VERBS: &[&str] = &[
    "修建", "参观", "描述", "测量", "研究", "打开", "发现", "种植", "收集", "观察", "记录", "解释", "设计", "测试", "改进",
    "讨论", "保护", "分享", "整理", "介绍", "学习", "准备", "完成", "改变", "访问", "欣赏", "写下", "回忆", "庆祝", "寻找",
];

pub const ZH_ADJECTIVES: &[&str] = &[
    "古老的", "新的", "安静的", "热闹的", "狭窄的", "宽阔的", "现代的", "小小的", "巨大的", "明亮的", "寒冷的", "温暖的",
    "温和的", "耐心的", "好奇的", "著名的", "遥远的", "当地的", "绿色的", "金色的", "简单的", "复杂的", "有用的", "少见的",
];

pub const ZH_TIME: &[&str] = &[
    "那一年", "第二天", "每到春天", "很多年以后", "在那个时候", "后来", "最近", "从前", "每天早晨", "到了晚上", "去年冬天", "不久以后",
];

pub const ZH_PEOPLE: &[&str] = &["他", "她", "我们", "老人", "年轻人", "村民", "学生们", "工人们", "孩子们", "大家", "我", "他们"];

pub const ZH_CONNECTIVES: &[&str] = &["但是，", "因此，", "同时，", "不过，", "于是，", "而且，", "可是，", "所以，", "其实，", "总之，"];

/// Lines of site furniture: navigation, footers, cookie banners.
pub const BOILERPLATE_EN: &[&str] = &[
    "Home | About us | Contact | Privacy policy | Terms of use",
    "Skip to main content",
    "Subscribe to our newsletter for weekly updates",
    "This website uses cookies to improve your experience. Accept all cookies",
    "Copyright 2024 All rights reserved",
    "Share this article: Facebook Twitter Email",
    "Log in | Register | Forgot password?",
    "Related posts",
    "Leave a comment",
    "Back to top",
];

pub const BOILERPLATE_ZH: &[&str] = &[
    "首页 | 关于我们 | 联系方式 | 隐私政策",
    "版权所有 2024 保留所有权利",
    "点击这里订阅我们的最新消息",
    "登录 | 注册 | 忘记密码",
    "返回顶部",
    "相关文章推荐",
];

pub const SPAM_ZH: &[&str] = &[
    "免费下载 点击这里 立即领取",
    "最新优惠 限时抢购 不要错过",
    "加微信了解更多 价格最低",
    "特价促销 全场包邮 马上购买",
    "点击进入 官方网站 正品保证",
];

pub const SPAM_KEYWORDS_EN: &[&str] = &[
    "cheap", "best", "buy", "online", "discount", "free", "shipping", "deal", "casino", "bonus", "loans", "pills", "offer", "sale",
];

pub const LOREM: &str = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore et dolore magna aliqua ut enim ad minim veniam quis nostrud exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat";

pub const CODE_IDENTIFIERS: &[&str] = &[
    "count", "total", "items", "buffer", "result", "value", "index", "config", "parser", "reader", "writer", "cache",
    "request", "response", "handler", "session", "user", "record", "matrix", "vector",
];

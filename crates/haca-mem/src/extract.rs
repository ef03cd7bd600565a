//! Extraction of memories from a conversation, and its evaluation.
//!
//! - [`extract_rules`]: a deterministic rule-based extractor. It reads only the user's turns,
//!   drops quoted text, questions, hypotheticals and reported speech, maps first-person statements
//!   onto the slots of [`subjects`] (home_city, employer, diet, ...), and marks past-tense
//!   statements with a time expression as episodic. Memory text is third person without a pronoun:
//!   "Lives in Lisbon", "Is a data engineer".
//! - [`llm_extraction_prompt`] and [`parse_llm_extraction`]: the pure halves of extraction by a
//!   language model (the caller sends the prompt to the local LLM or an upstream provider).
//! - [`same_fact`] (also the store's re-validation test) and [`evaluate`]: precision, recall and
//!   F1 of predicted memories against a labelled set (`fixtures/memory/extraction.jsonl`).

use crate::row::{Category, MemoryType};
use regex::{Captures, Regex};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

/// Who wrote a message (MemSync's `messages[].role`). `developer` reads as `system`.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[serde(alias = "developer")]
    System,
    User,
    Assistant,
    Tool,
}

/// One message of a conversation, as MemSync's `POST /v1/memories` takes it.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

impl Message {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Message {
            role,
            content: content.into(),
        }
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self::new(Role::User, content)
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new(Role::Assistant, content)
    }
    pub fn system(content: impl Into<String>) -> Self {
        Self::new(Role::System, content)
    }
}

/// One extracted memory, with MemSync's field names (`memory`, `type`, `categories`) and the
/// slot it fills (`subject`, one of [`subjects`], or null for a fact that contradicts nothing).
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct Extracted {
    pub memory: String,
    #[serde(rename = "type")]
    pub memory_type: MemoryType,
    pub categories: Vec<Category>,
    #[serde(default)]
    pub subject: Option<String>,
}

impl Extracted {
    fn new(memory: String, memory_type: MemoryType, categories: Vec<Category>) -> Self {
        Extracted {
            memory,
            memory_type,
            categories,
            subject: None,
        }
    }

    /// A semantic fact filling `slot` (its category is the slot's).
    fn slot(slot: &str, memory: String) -> Self {
        let category = subject_category(slot).unwrap_or(Category::Identity);
        Extracted {
            memory,
            memory_type: MemoryType::Semantic,
            categories: vec![category],
            subject: Some(slot.to_owned()),
        }
    }
}

/// The slots: single-valued things about a user. Two live rows with one subject contradict, so a
/// new value supersedes the old row. (name, category, what it holds)
const SLOTS: [(&str, Category, &str); 26] = [
    ("name", Category::Identity, "the user's name"),
    ("age", Category::Identity, "age in years"),
    ("birthday", Category::Identity, "date of birth"),
    ("home_city", Category::Identity, "where the user lives now"),
    ("hometown", Category::Identity, "where the user is from"),
    ("nationality", Category::Identity, "nationality"),
    ("native_language", Category::Identity, "first language"),
    (
        "employer",
        Category::Career,
        "organisation the user works for",
    ),
    ("job_title", Category::Career, "role or occupation"),
    (
        "work_arrangement",
        Category::Career,
        "remote, hybrid or office",
    ),
    ("partner", Category::Relationships, "spouse or partner"),
    (
        "relationship_status",
        Category::Relationships,
        "single, in a relationship, married, ...",
    ),
    ("children", Category::Relationships, "the user's children"),
    (
        "diet",
        Category::Health,
        "vegetarian, vegan, gluten-free, ...",
    ),
    ("fitness_routine", Category::Health, "regular exercise"),
    ("sleep_schedule", Category::Health, "sleep habits"),
    ("savings_goal", Category::Finance, "what the user saves for"),
    (
        "monthly_budget",
        Category::Finance,
        "a monthly spending limit",
    ),
    ("housing", Category::Finance, "rents or owns, and the cost"),
    (
        "current_study",
        Category::Learning,
        "degree or course in progress",
    ),
    (
        "learning_language",
        Category::Learning,
        "language being learned",
    ),
    ("next_trip", Category::Travel, "the next planned trip"),
    (
        "favorite_team",
        Category::Interests,
        "sports team supported",
    ),
    (
        "task_manager",
        Category::Productivity,
        "tool for tasks and notes",
    ),
    (
        "work_hours",
        Category::Productivity,
        "preferred working hours",
    ),
    ("religion", Category::Private, "religion or belief"),
];

const SUBJECT_NAMES: [&str; SLOTS.len()] = {
    let mut out = [""; SLOTS.len()];
    let mut i = 0;
    while i < SLOTS.len() {
        out[i] = SLOTS[i].0;
        i += 1;
    }
    out
};

/// The slot names a memory's `subject` may take (documented in fixtures/memory/README.md).
pub fn subjects() -> &'static [&'static str] {
    &SUBJECT_NAMES
}

/// The category of a slot.
pub fn subject_category(subject: &str) -> Option<Category> {
    SLOTS.iter().find(|s| s.0 == subject).map(|s| s.1)
}

/// The categories a text's words suggest (at most two, strongest first), by keyword; `fallback`
/// when none does.
pub fn categorize(text: &str, fallback: Category) -> Vec<Category> {
    // Keywords per category, separated by |.
    const KEYWORDS: [(Category, &str); 10] = [
        (
            Category::Travel,
            "trip|flight|flights|flew|hotel|visit|visited|holiday|vacation|abroad|travel|travelled|traveled|airport|back from|beach|itinerary",
        ),
        (
            Category::Health,
            "marathon|gym|yoga|doctor|diagnosed|sick|hospital|surgery|diet|sleep|workout|injury|injured|allergic|allergy|eat|drink|smoke|run|ran|running|lift|weights|therapist|anxiety|medication|pain|disease|diabetes|asthma",
        ),
        (
            Category::Relationships,
            "wife|husband|partner|boyfriend|girlfriend|daughter|son|kids|children|brother|sister|mom|mum|dad|mother|father|family|friend|friends|anniversary|wedding|married|dog|cat|baby",
        ),
        (
            Category::Career,
            "job|work|promoted|promotion|boss|office|interview|hired|fired|colleague|team|client|career|manager|company",
        ),
        (
            Category::Finance,
            "money|salary|rent|mortgage|savings|save|budget|debt|invest|invested|loan|bank|paid|€|£|$|bought",
        ),
        (
            Category::Learning,
            "course|class|exam|studying|degree|learn|learning|lesson|university|school|study|code|coding",
        ),
        (
            Category::Interests,
            "watched|movie|film|concert|game|book|books|read|reading|played|play|plays|hiking|hike|band|music|match|fan|cello|guitar|piano|painting|photography|cooking|climbing",
        ),
        (
            Category::Productivity,
            "notion|journal|journaling|todo|focus|deep work|calendar|pomodoro|notes|tasks|routine|habit",
        ),
        (
            Category::Private,
            "therapist|therapy|debt|religion|secret|between us",
        ),
        (
            Category::Identity,
            "name|born|years old|grew up",
        ),
    ];
    let lower = text.to_lowercase();
    let words: BTreeSet<&str> = lower
        .split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .filter(|w| !w.is_empty())
        .collect();
    let mut scored: Vec<(usize, usize, Category)> = KEYWORDS
        .iter()
        .enumerate()
        .filter_map(|(i, (cat, keys))| {
            let n = keys
                .split('|')
                .filter(|k| {
                    if k.contains(' ') || !k.chars().all(char::is_alphanumeric) {
                        lower.contains(k)
                    } else {
                        words.contains(k)
                    }
                })
                .count();
            (n > 0).then_some((n, i, *cat))
        })
        .collect();
    scored.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let out: Vec<Category> = scored.into_iter().take(2).map(|s| s.2).collect();
    if out.is_empty() {
        vec![fallback]
    } else {
        out
    }
}

// ---------------------------------------------------------------------------------------------
// The rule extractor.

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("extraction pattern")
}

/// A capitalised name or place: "Lisbon", "Mexico City", "Kraków".
const PROPER: &str = r"([A-Z][\p{L}'’&.-]*(?:[ -][A-Z][\p{L}'’&.-]*)*)";
/// The rest of a clause.
const REST: &str = r"([^,;:.!?()]*)";
const ADVERBS: &str = r"(?:(?i:just|finally|also|actually|currently|now|still|recently|really|usually|basically|officially|mostly|honestly)\s+)*";
const TITLE_NOUNS: &str = "engineer|developer|designer|manager|teacher|nurse|doctor|lawyer|accountant|scientist|analyst|consultant|writer|student|researcher|architect|chef|pharmacist|founder|programmer|editor|journalist|photographer|therapist|electrician|plumber|mechanic|librarian|professor|lecturer|paramedic|dentist|veterinarian|vet|marketer|recruiter|officer|director|assistant|intern|administrator|specialist|coordinator|technician|owner|lead|ceo|cto";
const LANGUAGES: &str = "English|Spanish|French|German|Italian|Portuguese|Japanese|Mandarin|Cantonese|Chinese|Korean|Arabic|Russian|Dutch|Swedish|Norwegian|Danish|Finnish|Polish|Greek|Turkish|Hindi|Urdu|Bengali|Vietnamese|Thai|Hebrew|Czech|Ukrainian|Romanian|Hungarian|Indonesian|Tagalog|Swahili|Catalan|Irish|Welsh";
const NATIONALITIES: &str = "American|British|English|Scottish|Welsh|Irish|Canadian|Australian|French|German|Spanish|Italian|Portuguese|Dutch|Belgian|Swiss|Austrian|Polish|Swedish|Norwegian|Danish|Finnish|Greek|Turkish|Russian|Ukrainian|Indian|Pakistani|Chinese|Japanese|Korean|Vietnamese|Thai|Filipino|Indonesian|Brazilian|Mexican|Argentinian|Colombian|Chilean|Nigerian|Kenyan|Egyptian|Moroccan|Israeli|Iranian";
const RELIGIONS: &str = "Muslim|Christian|Catholic|Protestant|Jewish|Hindu|Buddhist|Atheist|Agnostic|Sikh|Mormon|Orthodox|atheist|agnostic";

struct Pat {
    re: Regex,
    /// The pattern does not itself say who the subject is ("Huge Arsenal fan", "as a nurse"):
    /// it applies only to a sentence about the user.
    unanchored: bool,
    /// The pattern states a negative habit ("I don't eat pork"): its own negation is the fact.
    negative: bool,
    build: fn(&Captures) -> Vec<Extracted>,
}

fn pat(re_s: &str, unanchored: bool, build: fn(&Captures) -> Vec<Extracted>) -> Pat {
    Pat {
        re: re(re_s),
        unanchored,
        negative: false,
        build,
    }
}

fn negative(mut p: Pat) -> Pat {
    p.negative = true;
    p
}

fn g<'a>(c: &'a Captures, i: usize) -> &'a str {
    c.get(i)
        .map_or("", |m| m.as_str())
        .trim()
        .trim_end_matches(['.', ',', '!', '?', ';', ':'])
        .trim()
}

fn article(noun: &str) -> &'static str {
    match noun.chars().next().map(|c| c.to_ascii_lowercase()) {
        Some('a' | 'e' | 'i' | 'o' | 'u') => "an",
        _ => "a",
    }
}

fn cap_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// First person to third: pronouns become they/their/them.
fn third_person_pronouns(s: &str) -> String {
    let mut out = Vec::new();
    for w in s.split_whitespace() {
        let lower = w.to_lowercase();
        let (core, tail) = match lower.find(|c: char| !c.is_alphanumeric() && c != '\'') {
            Some(i) => (&lower[..i], &w[i..]),
            None => (lower.as_str(), ""),
        };
        let rep = match core {
            "my" => Some("their"),
            "me" => Some("them"),
            "myself" => Some("themselves"),
            "mine" => Some("theirs"),
            "i" => Some("they"),
            "i'm" => Some("they are"),
            "i've" => Some("they have"),
            "our" => Some("their"),
            "us" => Some("them"),
            "we" => Some("they"),
            _ => None,
        };
        match rep {
            Some(r) => out.push(format!("{r}{tail}")),
            None => out.push(w.to_owned()),
        }
    }
    out.join(" ")
}

/// A bare verb in the third person singular: lift -> lifts, do -> does, am -> is.
fn verb_3sg(v: &str) -> String {
    let l = v.to_lowercase();
    match l.as_str() {
        "am" | "'m" => return "is".into(),
        "have" | "'ve" => return "has".into(),
        "do" => return "does".into(),
        "go" => return "goes".into(),
        _ => {}
    }
    if l.ends_with('s')
        || l.ends_with("sh")
        || l.ends_with("ch")
        || l.ends_with('x')
        || l.ends_with('z')
        || l.ends_with('o')
    {
        format!("{v}es")
    } else if l.ends_with('y')
        && !matches!(l.chars().rev().nth(1), Some('a' | 'e' | 'i' | 'o' | 'u'))
    {
        format!("{}ies", &v[..v.len() - 1])
    } else {
        format!("{v}s")
    }
}

const COMMON_VERBS: [&str; 24] = [
    "do", "go", "play", "run", "lift", "work", "live", "love", "like", "read", "swim", "cook",
    "watch", "have", "use", "ride", "cycle", "climb", "train", "write", "paint", "bake", "walk",
    "study",
];

/// "lift three times a week and do yoga" -> "Lifts three times a week and does yoga".
fn third_person_clause(verb: &str, rest: &str) -> String {
    let mut words: Vec<String> = rest.split_whitespace().map(str::to_owned).collect();
    for i in 1..words.len() {
        if words[i - 1].eq_ignore_ascii_case("and")
            && COMMON_VERBS.contains(&words[i].to_lowercase().as_str())
        {
            words[i] = verb_3sg(&words[i]);
        }
    }
    let rest = third_person_pronouns(&words.join(" "));
    let s = if rest.is_empty() {
        verb_3sg(verb)
    } else {
        format!("{} {}", verb_3sg(verb), rest)
    };
    cap_first(&s)
}

fn job_title_memory(title: &str) -> String {
    let title = title.trim().to_lowercase();
    format!("Is {} {}", article(&title), title)
}

static SLOT_PATTERNS: LazyLock<Vec<Pat>> = LazyLock::new(|| {
    let i_am = r"\b(?i:i'm|i’m|i am)\s+";
    vec![
        // name
        pat(
            &format!(r"\b(?i:my name is|my name's|call me)\s+{PROPER}"),
            false,
            |c| vec![Extracted::slot("name", format!("Name is {}", g(c, 1)))],
        ),
        pat(
            &format!(r"{i_am}([A-Z][\p{{L}}]+)\s*(?:,|$|[.!]|(?i:by the way|btw|here)\b)"),
            false,
            |c| {
                let n = g(c, 1);
                let deny = format!("{RELIGIONS}|{NATIONALITIES}|{LANGUAGES}|Vegan|Vegetarian|Single|Married|Fine|Good|Sorry|Back|Here|Done|Ok|Okay");
                if deny.split('|').any(|d| d.eq_ignore_ascii_case(n)) {
                    return vec![];
                }
                vec![Extracted::slot("name", format!("Name is {n}"))]
            },
        ),
        // age
        pat(
            r"\b(?i:i'm|i’m|i am|i turned|i just turned|i'll be|i’ll be)\s+(\d{1,3})(?:\s+(?i:years old|yo))?\s*(?:[,.!;]|$|\s+(?i:and|but|now|so|this|next)\b)",
            false,
            |c| vec![Extracted::slot("age", format!("Is {} years old", g(c, 1)))],
        ),
        // birthday
        pat(r"\b(?i:my birthday is(?: on)?)\s+([^,;.!?]+)", false, |c| {
            vec![Extracted::slot(
                "birthday",
                format!("Birthday is {}", g(c, 1)),
            )]
        }),
        // home_city
        pat(
            &format!(
                r"\b(?i:i|we)(?:\s+|(?i:'ve|’ve)\s+){ADVERBS}(?i:live|have lived|lived|moved|relocated|have moved|just moved)\s+(?i:in|to)\s+{PROPER}"
            ),
            false,
            |c| {
                vec![Extracted::slot(
                    "home_city",
                    format!("Lives in {}", g(c, 1)),
                )]
            },
        ),
        pat(
            &format!(r"{i_am}{ADVERBS}(?i:based|living)\s+in\s+{PROPER}"),
            false,
            |c| {
                vec![Extracted::slot(
                    "home_city",
                    format!("Lives in {}", g(c, 1)),
                )]
            },
        ),
        // hometown
        pat(
            &format!(
                r"(?i:\b(?:i'm|i’m|i am|i come)\s+(?:originally\s+)?from|\boriginally\s+from|\bi grew up in|\bborn and raised in)\s+{PROPER}"
            ),
            true,
            |c| {
                vec![Extracted::slot(
                    "hometown",
                    format!("Is originally from {}", g(c, 1)),
                )]
            },
        ),
        // nationality
        pat(&format!(r"{i_am}({NATIONALITIES})\b"), false, |c| {
            vec![Extracted::slot("nationality", format!("Is {}", g(c, 1)))]
        }),
        // native language
        pat(
            &format!(
                r"(?i:native)\s+({LANGUAGES})\s+(?i:speaker)|({LANGUAGES}) (?i:is my (?:native language|mother tongue|first language))|(?i:my (?:native language|mother tongue|first language) is)\s+({LANGUAGES})"
            ),
            true,
            |c| {
                let l = [g(c, 1), g(c, 2), g(c, 3)]
                    .into_iter()
                    .find(|s| !s.is_empty())
                    .unwrap_or("");
                vec![Extracted::slot(
                    "native_language",
                    format!("Is a native {l} speaker"),
                )]
            },
        ),
        // employer with title: "I'm a data engineer at Acme"
        pat(
            &format!(
                r"\b(?i:i'm|i’m|i am|i work as|i'm working as)\s+(?i:a|an)\s+((?i:[a-z-]+\s+){{0,3}}?(?i:{TITLE_NOUNS}))\s+(?i:at|for|with)\s+{PROPER}"
            ),
            false,
            |c| {
                vec![
                    Extracted::slot("employer", format!("Works at {}", g(c, 2))),
                    Extracted::slot("job_title", job_title_memory(g(c, 1))),
                ]
            },
        ),
        // employer
        pat(
            &format!(
                r"\b(?i:i|i've|i’ve|i have)\s+{ADVERBS}(?i:work at|work for|joined|started at|started working at|started working for|am working at|'m working at)\s+{PROPER}"
            ),
            false,
            |c| vec![Extracted::slot("employer", format!("Works at {}", g(c, 1)))],
        ),
        pat(
            &format!(
                r"\b(?i:and)\s+{ADVERBS}(?i:joined|started at|started working at|started working for)\s+{PROPER}"
            ),
            true,
            |c| vec![Extracted::slot("employer", format!("Works at {}", g(c, 1)))],
        ),
        // job title
        pat(
            &format!(
                r"\b(?i:i'm|i’m|i am|i work as|i'm working as)\s+{ADVERBS}(?i:a|an)\s+((?i:[a-z-]+\s+){{0,3}}?(?i:{TITLE_NOUNS}))\b"
            ),
            false,
            |c| vec![Extracted::slot("job_title", job_title_memory(g(c, 1)))],
        ),
        pat(
            &format!(
                r"\b(?i:as a|as an|promoted to|promoted to a|promoted to an)\s+((?i:[a-z-]+\s+){{0,3}}?(?i:{TITLE_NOUNS}))\b"
            ),
            true,
            |c| vec![Extracted::slot("job_title", job_title_memory(g(c, 1)))],
        ),
        // work arrangement
        pat(
            r"(?i:\bi work (?:from home|remotely|remote)|\bi'm remote\b|\bi’m remote\b)",
            false,
            |_| vec![Extracted::slot("work_arrangement", "Works remotely".into())],
        ),
        pat(r"(?i:\b(?:fully|100%) remote)", true, |c| {
            let s = c.get(0).map_or("", |m| m.as_str()).to_lowercase();
            let m = if s.contains("fully") || s.contains("100%") {
                "Works fully remote"
            } else {
                "Works remotely"
            };
            vec![Extracted::slot("work_arrangement", m.into())]
        }),
        pat(
            r"(?i:\b(\w+) days? a week (?:in|at|from) the office|\b(?:in|to|at|into) the office (\w+) days? a week)",
            true,
            |c| {
                let n = [g(c, 1), g(c, 2)]
                    .into_iter()
                    .find(|s| !s.is_empty())
                    .unwrap_or("");
                vec![Extracted::slot(
                    "work_arrangement",
                    format!("Works in the office {} days a week", n.to_lowercase()),
                )]
            },
        ),
        pat(
            r"(?i:\bi work hybrid|\bi'm hybrid|\bhybrid (?:schedule|role|job))",
            true,
            |_| vec![Extracted::slot("work_arrangement", "Works hybrid".into())],
        ),
        // partner
        pat(
            r"\b(?i:my)\s+(?i:(wife|husband|partner|boyfriend|girlfriend|fiancée|fiancee|fiancé|fiance|spouse)),?\s+([A-Z][\p{L}]+)",
            false,
            |c| {
                let (who, name) = (g(c, 1).to_lowercase(), g(c, 2));
                let m = match who.as_str() {
                    "wife" | "husband" | "spouse" => format!("Is married to {name}"),
                    "boyfriend" | "girlfriend" => format!("Is dating {name}"),
                    "partner" => format!("Has a partner named {name}"),
                    _ => format!("Is engaged to {name}"),
                };
                vec![Extracted::slot("partner", m)]
            },
        ),
        // relationship status
        pat(
            &format!(
                r"{i_am}{ADVERBS}(?i:happily\s+)?(?i:(single|married|engaged|divorced|widowed))\b"
            ),
            false,
            |c| {
                vec![Extracted::slot(
                    "relationship_status",
                    format!("Is {}", g(c, 1).to_lowercase()),
                )]
            },
        ),
        pat(
            r"(?i:\bi(?:'ve|’ve| have) been (?:seeing|dating) someone|\bi'm (?:seeing|dating) someone|\bi’m (?:seeing|dating) someone|\bi have a (?:boyfriend|girlfriend|partner)\b|\bi'm in a relationship|\bi’m in a relationship)",
            false,
            |_| {
                vec![Extracted::slot(
                    "relationship_status",
                    "Is in a relationship".into(),
                )]
            },
        ),
        // children
        pat(
            r"\b(?i:my)\s+(?i:(daughter|son)),?\s+([A-Z][\p{L}]+)",
            false,
            |c| {
                vec![Extracted::slot(
                    "children",
                    format!("Has a {} named {}", g(c, 1).to_lowercase(), g(c, 2)),
                )]
            },
        ),
        pat(
            r"\b(?i:i have|i've got|we have)\s+(\w+)\s+(?i:kids|children)\b",
            false,
            |c| {
                vec![Extracted::slot(
                    "children",
                    format!("Has {} children", g(c, 1)),
                )]
            },
        ),
        // diet
        pat(
            r"\b(?i:i'm|i’m|i am|i've been|i’ve been|i have been|i went|went|i eat|i've gone|i’ve gone)\s+(?i:(?:now|fully|strictly|mostly|completely|a|an)\s+)*(?i:(vegetarian|vegan|pescatarian|pescetarian|gluten-free|keto|paleo|plant-based|dairy-free|lactose intolerant|halal|kosher))\b",
            true,
            |c| {
                vec![Extracted::slot(
                    "diet",
                    format!("Is {}", g(c, 1).to_lowercase()),
                )]
            },
        ),
        // fitness routine
        pat(
            r"\b(?i:i)\s+(?i:(?:usually|regularly|also)\s+)?(?i:(lift|run|swim|cycle|bike|climb|box|train|work out|do yoga|do pilates|do crossfit|go to the gym|go running|go swimming))\b([^,;.!?]*(?i:times? a|every|per|each|daily|on (?:mondays|tuesdays|wednesdays|thursdays|fridays|saturdays|sundays|weekends))[^,;.!?]*)",
            false,
            |c| {
                let v = g(c, 1);
                let (verb, obj) = v.split_once(' ').unwrap_or((v, ""));
                let rest = format!("{obj} {}", g(c, 2));
                vec![Extracted::slot(
                    "fitness_routine",
                    third_person_clause(verb, rest.trim()),
                )]
            },
        ),
        // sleep
        pat(
            r"\b(?i:i'm|i’m|i am)\s+(?i:a|an)\s+(?i:(night owl|early bird|morning person|light sleeper|heavy sleeper))",
            false,
            |c| {
                vec![Extracted::slot(
                    "sleep_schedule",
                    format!("Is a {}", g(c, 1).to_lowercase()),
                )]
            },
        ),
        pat(
            r"\b(?i:i)\s+(?i:usually\s+|normally\s+|always\s+)?(?i:(go to bed|go to sleep|wake up|get up))\s+(?i:at|around|by|before)\s+([^,;.!?]+)",
            false,
            |c| {
                vec![Extracted::slot(
                    "sleep_schedule",
                    third_person_clause(
                        g(c, 1).split(' ').next().unwrap_or(""),
                        &format!(
                            "{} at {}",
                            g(c, 1).split_once(' ').map_or("", |x| x.1),
                            g(c, 2)
                        ),
                    ),
                )]
            },
        ),
        // savings goal
        pat(
            r"\b(?i:i'm|i’m|i am)\s+(?i:trying to\s+|hoping to\s+)?(?i:save|saving)\s+(?i:up\s+)?(?i:for\s+)?([^,;.!?]+)",
            false,
            |c| {
                vec![Extracted::slot(
                    "savings_goal",
                    format!("Is saving {}", third_person_pronouns(g(c, 1))),
                )]
            },
        ),
        pat(r"\b(?i:my savings goal is)\s+([^,;.!?]+)", false, |c| {
            vec![Extracted::slot(
                "savings_goal",
                format!("Is saving {}", g(c, 1)),
            )]
        }),
        // monthly budget
        pat(
            r"(?i:\bbudget (?:of|is))\s+(\S+)\s+(?i:a|per|each|every)\s+(?i:month)([^;.!?]*)",
            true,
            |c| {
                let rest = third_person_pronouns(g(c, 2));
                let m = if rest.is_empty() {
                    format!("Has a monthly budget of {}", g(c, 1))
                } else {
                    format!("Has a monthly budget of {} {}", g(c, 1), rest)
                };
                vec![Extracted::slot("monthly_budget", m)]
            },
        ),
        // housing
        pat(
            r"\b(?i:my rent is|i pay)\s+(\S+)(?:\s+(?i:a month|per month|monthly|in rent))",
            false,
            |c| {
                vec![Extracted::slot(
                    "housing",
                    format!("Rents, paying {} a month", g(c, 1)),
                )]
            },
        ),
        pat(
            r"\b(?i:i|we)\s+(?i:(rent|own))\s+(?i:a|an|my|our)\s+(?i:(flat|apartment|house|home|condo|studio))",
            false,
            |c| {
                let v = if g(c, 1).eq_ignore_ascii_case("own") {
                    "Owns"
                } else {
                    "Rents"
                };
                vec![Extracted::slot(
                    "housing",
                    format!("{v} a {}", g(c, 2).to_lowercase()),
                )]
            },
        ),
        pat(
            r"(?i:\b(?:bought|closed on|just bought)\s+(?:a|the|our|my)\s+(house|flat|apartment|home|condo))",
            true,
            |c| {
                vec![Extracted::slot(
                    "housing",
                    format!("Owns a {}", g(c, 1).to_lowercase()),
                )]
            },
        ),
        pat(r"(?i:\bhomeowners?\b)", true, |_| {
            vec![Extracted::slot("housing", "Owns a home".into())]
        }),
        // current study
        pat(
            r"\b(?i:i'm|i’m|i am)\s+(?i:(?:[\w-]+\s+){0,3}?)(?i:doing|studying for|studying|enrolled in|taking|through|working on|in my (?:first|second|third|final|last) year of)\s+(?i:a\s+|an\s+|my\s+)?((?i:[\w'-]+\s+){0,3}?(?i:msc|ma|ba|bsc|phd|mba|degree|master's|masters|bachelor's|diploma|course|bootcamp|certificate|certification)\b[^,;.!?]*)",
            false,
            |c| {
                let what = g(c, 1);
                vec![Extracted::slot(
                    "current_study",
                    format!("Is studying for {} {}", article(what), what),
                )]
            },
        ),
        // learning a language
        pat(
            &format!(
                r"\b(?i:i'm|i’m|i am|i've been|i’ve been|i have been|i've started|i started|i just started|i)\s+{ADVERBS}(?i:learning|studying|taking)\s+({LANGUAGES})\b(?:\s+(?i:on|with)\s+([A-Z]\w+))?"
            ),
            false,
            |c| {
                let on = g(c, 2);
                let m = if on.is_empty() {
                    format!("Is learning {}", g(c, 1))
                } else {
                    format!("Is learning {} on {on}", g(c, 1))
                };
                vec![Extracted::slot("learning_language", m)]
            },
        ),
        // next trip
        pat(
            &format!(
                r"\b(?i:i'm|i’m|i am|we're|we’re|we are)\s+(?i:going|heading|flying|travelling|traveling|off)\s+(?i:to)\s+{PROPER}{REST}"
            ),
            false,
            |c| {
                vec![Extracted::slot(
                    "next_trip",
                    format!(
                        "Is travelling to {}{}",
                        g(c, 1),
                        spaced(&third_person_pronouns(g(c, 2)))
                    ),
                )]
            },
        ),
        pat(
            &format!(
                r"(?i:\b(?:booked|i booked|we booked|just booked|i've booked|we've booked)\s+(?:a\s+|our\s+|my\s+)?(?:flights?|tickets?|trip|holiday|vacation)\s+to)\s+{PROPER}{REST}"
            ),
            true,
            |c| {
                vec![Extracted::slot(
                    "next_trip",
                    format!(
                        "Is travelling to {}{}",
                        g(c, 1),
                        spaced(&third_person_pronouns(g(c, 2)))
                    ),
                )]
            },
        ),
        // favourite team
        pat(
            r"(?i:\bi support|\bi'm a|\bi’m a|\bi am a)?\s*(?i:(?:huge|big|massive|die-hard|diehard|lifelong|proud)\s+)?\b([A-Z][\p{L}]+(?: [A-Z][\p{L}]+)?)\s+(?i:fan|supporter)\b",
            true,
            |c| {
                let team = g(c, 1);
                let team = team
                    .strip_prefix("Huge ")
                    .or_else(|| team.strip_prefix("Big "))
                    .unwrap_or(team);
                vec![Extracted::slot("favorite_team", format!("Supports {team}"))]
            },
        ),
        pat(&format!(r"\b(?i:i support)\s+{PROPER}"), false, |c| {
            vec![Extracted::slot(
                "favorite_team",
                format!("Supports {}", g(c, 1)),
            )]
        }),
        // task manager
        pat(
            r"\b(?i:i|we)\s+(?i:(?:use|run|live in|organi[sz]e|plan|track|manage|keep)\b[^,;.!?]*?)\b(?i:(notion|todoist|obsidian|trello|asana|things 3|omnifocus|evernote|google keep|ticktick|logseq|roam|microsoft to do|apple notes|linear))\b",
            false,
            |c| {
                let tool = g(c, 1);
                let tool = match tool.to_lowercase().as_str() {
                    "ticktick" => "TickTick".to_owned(),
                    "omnifocus" => "OmniFocus".to_owned(),
                    _ => tool.split(' ').map(cap_first).collect::<Vec<_>>().join(" "),
                };
                vec![Extracted::slot("task_manager", format!("Uses {tool}"))]
            },
        ),
        // work hours
        pat(
            r"\b(?i:i)\s+(?i:usually\s+|always\s+|normally\s+)?(?i:(do my (?:deep |focused |best )?work|do (?:deep|focused) work|work best|focus best|start work|start working))\s+([^,;.!?]+)",
            false,
            |c| {
                let v = g(c, 1);
                let (verb, obj) = v.split_once(' ').unwrap_or((v, ""));
                vec![Extracted::slot(
                    "work_hours",
                    third_person_clause(verb, &format!("{obj} {}", g(c, 2))),
                )]
            },
        ),
        // religion
        pat(
            &format!(r"{i_am}(?i:a\s+|an\s+)?(?i:({RELIGIONS}))\b"),
            false,
            |c| {
                vec![Extracted::slot(
                    "religion",
                    format!("Is {}", cap_first(&g(c, 1).to_lowercase())),
                )]
            },
        ),
    ]
});

fn spaced(s: &str) -> String {
    let s = s.trim();
    if s.is_empty() {
        String::new()
    } else {
        format!(" {s}")
    }
}

static OTHER_PATTERNS: LazyLock<Vec<Pat>> = LazyLock::new(|| {
    vec![
        // allergies
        pat(
            r"\b(?i:i'm|i’m|i am)\s+(?i:(?:very|severely|seriously|deathly|really|super|also)\s+)?(?i:allergic to)\s+([^,;.!?]+)",
            false,
            |c| {
                vec![Extracted::new(
                    format!("Is allergic to {}", g(c, 1)),
                    MemoryType::Semantic,
                    vec![Category::Health],
                )]
            },
        ),
        // lasting negative habits: "I don't eat pork"
        negative(pat(
            r"\b(?i:i don't|i don’t|i do not|i never)\s+(?i:(eat|drink|smoke))\b([^,;.!?]*)",
            false,
            |c| {
                vec![Extracted::new(
                    format!("Does not {} {}", g(c, 1).to_lowercase(), g(c, 2))
                        .trim()
                        .to_owned(),
                    MemoryType::Semantic,
                    vec![Category::Health],
                )]
            },
        )),
        // conditions
        pat(
            r"(?i:\bi have|\bi've got|\bi’ve got|\bdiagnosed with|\bi suffer from|\bi live with)\s+(?i:((?:type [12] )?diabetes|asthma|adhd|autism|celiac disease|coeliac disease|crohn's|ibs|migraines|epilepsy|arthritis|high blood pressure|hypertension|depression|anxiety|long covid|endometriosis))\b",
            true,
            |c| {
                let cond = g(c, 1);
                let mut cats = vec![Category::Health];
                if matches!(
                    cond.to_lowercase().as_str(),
                    "depression" | "anxiety" | "adhd" | "autism"
                ) {
                    cats.push(Category::Private);
                }
                vec![Extracted::new(
                    format!("Has {cond}"),
                    MemoryType::Semantic,
                    cats,
                )]
            },
        ),
        // wishes
        pat(
            r"\b(?i:i'd|i’d|i would|i)\s+(?i:really\s+)?(?i:love to|like to|want to|hope to)\s+(?i:(visit|go to|see|travel to|learn|try|live in))\s+([^,;.!?]+)",
            false,
            |c| {
                let verb = g(c, 1).to_lowercase();
                let cat = match verb.as_str() {
                    "learn" => Category::Learning,
                    "try" => Category::Interests,
                    _ => Category::Travel,
                };
                let what = g(c, 2);
                let what = what
                    .trim_end_matches(" someday")
                    .trim_end_matches(" one day");
                vec![Extracted::new(
                    format!("Wants to {verb} {}", third_person_pronouns(what)),
                    MemoryType::Semantic,
                    vec![cat],
                )]
            },
        ),
        // siblings and pets
        pat(
            r"\b(?i:my)\s+(?i:(older|younger|little|big|twin)\s+)?(?i:(brother|sister))\b",
            false,
            |c| {
                let (adj, who) = (g(c, 1).to_lowercase(), g(c, 2).to_lowercase());
                let memory = if adj.is_empty() {
                    format!("Has a {who}")
                } else {
                    format!("Has {} {adj} {who}", article(&adj))
                };
                vec![Extracted::new(
                    memory,
                    MemoryType::Semantic,
                    vec![Category::Relationships],
                )]
            },
        ),
        pat(
            r"\b(?i:my)\s+(?i:(dog|cat|puppy|kitten|rabbit|parrot))\s+(?i:is called\s+|called\s+|named\s+)?([A-Z][\p{L}]+)",
            false,
            |c| {
                vec![Extracted::new(
                    format!("Has a {} named {}", g(c, 1).to_lowercase(), g(c, 2)),
                    MemoryType::Semantic,
                    vec![Category::Relationships],
                )]
            },
        ),
        // likes and hobbies
        pat(
            r"\b(?i:i|we)\s+(?i:(?:really|also|just|absolutely|genuinely)\s+)*(?i:(love|enjoy|like|play|collect|paint|knit|bake|read|climb|surf|ski|garden|volunteer))\s+([^,;.!?]+)",
            false,
            |c| {
                let rest = g(c, 2);
                let first = rest.split_whitespace().next().unwrap_or("").to_lowercase();
                if matches!(
                    first.as_str(),
                    "it" | "that" | "this" | "your" | "you" | "how" | "when" | "to" | "what"
                ) {
                    return vec![];
                }
                let memory = third_person_clause(g(c, 1), rest);
                let cats = categorize(&memory, Category::Interests);
                vec![Extracted::new(memory, MemoryType::Semantic, cats)]
            },
        ),
        // learning something that is not a language
        pat(
            r"\b(?i:i'm|i’m|i am|i've|i’ve|i have|i)\s+(?i:(?:just|recently|also)\s+)?(?i:started\s+|been\s+)?(?i:learning|studying)\s+([^,;.!?]+)",
            false,
            |c| {
                vec![Extracted::new(
                    format!("Is learning {}", third_person_pronouns(g(c, 1))),
                    MemoryType::Semantic,
                    vec![Category::Learning],
                )]
            },
        ),
    ]
});

static TIME: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)\b(yesterday|today|tonight|this (?:morning|afternoon|evening|week|weekend|month|year)|last (?:night|week|weekend|month|year|monday|tuesday|wednesday|thursday|friday|saturday|sunday|summer|winter|spring|autumn|fall)|(?:a|an|one|two|three|four|five|six|\d+|a few|a couple of) (?:days?|weeks?|months?|years?) ago|on (?:monday|tuesday|wednesday|thursday|friday|saturday|sunday)|in (?:january|february|march|april|may|june|july|august|september|october|november|december)|earlier today|the other day)\b",
    )
});

const IRREGULAR_PAST: &str = "went|ran|got|did|saw|took|had|made|met|bought|found|flew|drove|ate|won|lost|gave|came|left|began|wrote|spent|swam|rode|caught|sold|threw|broke|built|felt|kept|paid|sang|sat|slept|spoke|stood|taught|thought|told|wore|hit|quit|read|fell|beat";

static PAST: LazyLock<Regex> = LazyLock::new(|| {
    re(&format!(
        r"(?i)(?:^(?:so|well|ok|okay|oh|yeah|and|also|anyway|guess what)?[,!]?\s*|\b(?:i|we)\s+)((?:(?:just|finally|also|actually|recently|then|only|totally)\s+)*)([a-z]+ed|{IRREGULAR_PAST})\b([^,;:.!?()]*)"
    ))
});

static HYPOTHETICAL: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)\b(if|unless|whether|should i|should we|would|could|might|maybe|perhaps|thinking about|thinking of|considering|wondering|hypothetically|imagine|pretend|suppose|in case)\b",
    )
});

static REPORTED: LazyLock<Regex> = LazyLock::new(|| {
    re(r"(?i)\b(says?|said|saying|told me|tells me|asked|asks|claims?|thinks?)\b")
});

static NEGATION: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?i)(\b(not|never|no longer|no)\b|n't\b|n’t\b)"));

static THIRD_PARTY_START: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)^\W*(?:so|well|and|but|also)?\W*(he|she|they|it|his|her|their|my\s+\w+|[A-Z]\w+\s+(?:is|has|works|lives|was))\b",
    )
});

/// Text with quoted passages dropped ("...", “...”, and '...' opened at a word's start), so
/// "my boss keeps saying 'I'm moving to Singapore'" says nothing about the user.
fn strip_quotes(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let prev_ok = i == 0 || !chars[i - 1].is_alphanumeric();
        let close = match c {
            '"' => Some('"'),
            '“' => Some('”'),
            '\'' | '‘' if prev_ok && chars.get(i + 1).is_some_and(|n| n.is_alphanumeric()) => {
                Some(if c == '‘' { '’' } else { '\'' })
            }
            _ => None,
        };
        if let Some(close) = close {
            // The closing mark: for a single quote, one not followed by a letter.
            let end = (i + 1..chars.len()).find(|&j| {
                chars[j] == close
                    && (close == '"'
                        || close == '”'
                        || !chars.get(j + 1).is_some_and(|n| n.is_alphanumeric()))
            });
            if let Some(end) = end {
                out.push_str(" … ");
                i = end + 1;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    out
}

/// Sentences, each with whether it is a question. Splits at . ! ? ; and newlines followed by a
/// space (or the end), and at a spaced dash.
fn sentences(text: &str) -> Vec<(String, bool)> {
    let text = text
        .replace(" - ", ". ")
        .replace(" — ", ". ")
        .replace(" – ", ". ");
    let mut out = Vec::new();
    let mut cur = String::new();
    let chars: Vec<char> = text.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        cur.push(c);
        let end = matches!(c, '.' | '!' | '?' | ';' | '\n')
            && chars
                .get(i + 1)
                .is_none_or(|n| n.is_whitespace() || *n == '"');
        if end {
            let t = cur.trim().to_owned();
            if !t.is_empty() {
                out.push((t.clone(), t.ends_with('?')));
            }
            cur.clear();
        }
    }
    let t = cur.trim().to_owned();
    if !t.is_empty() {
        out.push((t.clone(), t.ends_with('?')));
    }
    out
}

/// Whether the words before a match make it something other than the user's statement of fact.
fn guarded(sentence: &str, start: usize, end: usize, negative: bool) -> bool {
    let prefix = &sentence[..start];
    let clause_start = prefix.rfind([',', ';', ':']).map_or(0, |i| i + 1);
    let clause_prefix = &prefix[clause_start..];
    HYPOTHETICAL.is_match(prefix)
        || REPORTED.is_match(prefix)
        || (!negative
            && (NEGATION.is_match(clause_prefix) || NEGATION.is_match(&sentence[start..end])))
}

fn overlaps(spans: &[(usize, usize)], s: usize, e: usize) -> bool {
    spans.iter().any(|&(a, b)| s < b && a < e)
}

/// Whether facts already taken cover at least half of `s..e`: an event that is mostly a fact
/// already recorded ("got diagnosed with diabetes in March") is not a second memory.
fn mostly_taken(spans: &[(usize, usize)], s: usize, e: usize) -> bool {
    let covered: usize = spans
        .iter()
        .map(|&(a, b)| b.min(e).saturating_sub(a.max(s)))
        .sum();
    2 * covered >= e - s
}

fn extract_sentence(sentence: &str, out: &mut Vec<Extracted>) {
    let third_party = THIRD_PARTY_START.is_match(sentence);
    let mut spans: Vec<(usize, usize)> = Vec::new();
    for group in [&*SLOT_PATTERNS, &*OTHER_PATTERNS] {
        for p in group.iter() {
            for c in p.re.captures_iter(sentence) {
                let m = c.get(0).expect("match");
                if guarded(sentence, m.start(), m.end(), p.negative)
                    || (p.unanchored && third_party)
                    || overlaps(&spans, m.start(), m.end())
                {
                    continue;
                }
                let items = (p.build)(&c);
                if !items.is_empty() {
                    spans.push((m.start(), m.end()));
                    out.extend(items);
                }
            }
        }
    }
    // Episodic: a past-tense statement by the user with a time expression (or "just").
    let time = TIME.find(sentence);
    for c in PAST.captures_iter(sentence) {
        let m = c.get(0).expect("match");
        let (adv, verb, rest) = (g(&c, 1), g(&c, 2), g(&c, 3));
        let just = adv.to_lowercase().contains("just");
        if time.is_none() && !just {
            continue;
        }
        if guarded(sentence, m.start(), m.end(), false)
            || mostly_taken(&spans, m.start(), m.end())
            || (third_party && !m.as_str().to_lowercase().trim_start().starts_with('i'))
            || matches!(
                verb.to_lowercase().as_str(),
                "need" | "used" | "red" | "bed" | "shed" | "seed" | "feed" | "speed"
            )
        {
            continue;
        }
        let mut memory = format!(
            "{} {}",
            cap_first(&verb.to_lowercase()),
            third_person_pronouns(rest)
        );
        if let Some(t) = time {
            if !(m.start() <= t.start() && t.end() <= m.end()) {
                memory = format!("{} {}", memory.trim(), t.as_str().to_lowercase());
            }
        }
        let memory = memory.split_whitespace().collect::<Vec<_>>().join(" ");
        if memory.split_whitespace().count() < 2 {
            continue;
        }
        let cats = categorize(&memory, Category::Interests);
        spans.push((m.start(), m.end()));
        out.push(Extracted::new(memory, MemoryType::Episodic, cats));
    }
}

/// Memories from the user's turns of a conversation, by rule. Assistant, system and tool turns
/// are never read; questions, hypotheticals, negated statements, quoted text and reported speech
/// give nothing. One memory per slot (the latest statement wins); duplicates are dropped.
pub fn extract_rules(messages: &[Message]) -> Vec<Extracted> {
    let mut raw = Vec::new();
    for m in messages.iter().filter(|m| m.role == Role::User) {
        for (sentence, question) in sentences(&strip_quotes(&m.content)) {
            if !question {
                extract_sentence(&sentence, &mut raw);
            }
        }
    }
    let mut out: Vec<Extracted> = Vec::new();
    for e in raw {
        if let Some(s) = &e.subject {
            out.retain(|o| o.subject.as_ref() != Some(s));
        } else if out.iter().any(|o| same_fact(o, &e)) {
            continue;
        }
        out.push(e);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Extraction by a language model: the prompt and the parser.

/// The messages to send to a chat model so that it answers with a JSON array of memories.
pub fn llm_extraction_prompt(messages: &[Message]) -> Vec<Message> {
    let categories = Category::ALL
        .iter()
        .map(|c| {
            serde_json::to_value(c)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(", ");
    let slots = SLOTS
        .iter()
        .map(|(name, cat, what)| {
            let cat = serde_json::to_value(cat)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            format!("- {name} ({cat}): {what}")
        })
        .collect::<Vec<_>>()
        .join("\n");
    let system = format!(
        "You extract long-term memories about the USER from a conversation.\n\
         Answer with a JSON array only, no prose. Each item is an object:\n\
         {{\"memory\": string, \"type\": \"semantic\" | \"episodic\", \"categories\": [string, ...], \"subject\": string | null}}\n\n\
         Rules:\n\
         - Only facts the user states about themselves in their own turns. Never take facts from assistant turns, \
           quoted text, other people's plans, questions (\"should I move to Berlin?\"), hypotheticals (\"if I had kids\") \
           or negated guesses (\"I'm not a student\").\n\
         - \"memory\" is third person without a pronoun: \"Lives in Lisbon\", \"Is a data engineer\", \
           \"Went hiking in the Alps last weekend\".\n\
         - \"type\": semantic for lasting facts, preferences and plans; episodic for a dated event the user lived.\n\
         - \"categories\": one or two of: {categories}.\n\
         - \"subject\": the slot the fact fills, from this list, or null when none fits (one memory per slot):\n{slots}\n\
         - Nothing worth remembering: answer [].\n\n\
         Example: for \"I'm a nurse in Leeds and I went to Rome last week\" answer\n\
         [{{\"memory\": \"Is a nurse\", \"type\": \"semantic\", \"categories\": [\"career\"], \"subject\": \"job_title\"}}, \
         {{\"memory\": \"Lives in Leeds\", \"type\": \"semantic\", \"categories\": [\"identity\"], \"subject\": \"home_city\"}}, \
         {{\"memory\": \"Went to Rome last week\", \"type\": \"episodic\", \"categories\": [\"travel\"], \"subject\": null}}]"
    );
    let transcript = messages
        .iter()
        .filter(|m| matches!(m.role, Role::User | Role::Assistant))
        .map(|m| {
            let who = if m.role == Role::User {
                "USER"
            } else {
                "ASSISTANT"
            };
            format!("{who}: {}", m.content)
        })
        .collect::<Vec<_>>()
        .join("\n");
    vec![
        Message::system(system),
        Message::user(format!(
            "Conversation:\n{transcript}\n\nReturn the JSON array of memories about the USER."
        )),
    ]
}

/// Why a model's answer, or one item of it, was refused. Each names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtractError {
    #[error("answer: no JSON array of memories found")]
    NoJson,
    #[error("answer: not valid JSON: {0}")]
    Json(String),
    #[error("item {index}: {field}: {reason}")]
    Item {
        index: usize,
        field: &'static str,
        reason: String,
    },
}

/// The memories in a model's answer, tolerant of code fences and prose around the JSON (an array,
/// or an object with a `memories` array). Items with an unknown type or category, or no memory
/// text, are dropped; an unknown subject becomes null. Errs when no JSON is found, or when every
/// item was dropped (with the first item's reason).
pub fn parse_llm_extraction(text: &str) -> Result<Vec<Extracted>, ExtractError> {
    let (items, notes) = parse_llm_extraction_report(text)?;
    let dropped = notes.iter().find(|n| {
        !matches!(
            n,
            ExtractError::Item {
                field: "subject",
                ..
            }
        )
    });
    match (items.is_empty(), dropped) {
        (true, Some(first)) => Err(first.clone()),
        _ => Ok(items),
    }
}

/// As [`parse_llm_extraction`], with the reason for each dropped item (and each subject set to
/// null) alongside the memories kept.
pub fn parse_llm_extraction_report(
    text: &str,
) -> Result<(Vec<Extracted>, Vec<ExtractError>), ExtractError> {
    let array = find_json_array(text)?;
    let mut items = Vec::new();
    let mut notes = Vec::new();
    for (index, v) in array.iter().enumerate() {
        match parse_item(index, v) {
            Ok((e, note)) => {
                items.push(e);
                notes.extend(note);
            }
            Err(e) => notes.push(e),
        }
    }
    Ok((items, notes))
}

fn find_json_array(text: &str) -> Result<Vec<Value>, ExtractError> {
    let mut first_err = None;
    for (i, c) in text.char_indices() {
        if c != '[' && c != '{' {
            continue;
        }
        let mut stream = serde_json::Deserializer::from_str(&text[i..]).into_iter::<Value>();
        match stream.next() {
            Some(Ok(Value::Array(a))) => return Ok(a),
            Some(Ok(Value::Object(o))) => {
                if let Some(Value::Array(a)) = o.get("memories") {
                    return Ok(a.clone());
                }
            }
            Some(Ok(_)) | None => {}
            Some(Err(e)) => {
                if c == '[' && first_err.is_none() {
                    first_err = Some(e.to_string());
                }
            }
        }
    }
    Err(first_err.map_or(ExtractError::NoJson, ExtractError::Json))
}

fn parse_item(index: usize, v: &Value) -> Result<(Extracted, Option<ExtractError>), ExtractError> {
    let err = |field: &'static str, reason: String| ExtractError::Item {
        index,
        field,
        reason,
    };
    let o = v
        .as_object()
        .ok_or_else(|| err("item", "is not an object".into()))?;
    let memory = match o.get("memory") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_owned(),
        Some(Value::String(_)) => return Err(err("memory", "is empty".into())),
        Some(_) => return Err(err("memory", "is not a string".into())),
        None => return Err(err("memory", "is missing".into())),
    };
    let memory_type = match o.get("type").and_then(Value::as_str) {
        Some(t) => match t.trim().to_lowercase().as_str() {
            "semantic" => MemoryType::Semantic,
            "episodic" => MemoryType::Episodic,
            other => {
                return Err(err(
                    "type",
                    format!("unknown type {other:?} (semantic or episodic)"),
                ))
            }
        },
        None => return Err(err("type", "is missing or not a string".into())),
    };
    let raw: Vec<&Value> = match o.get("categories") {
        Some(Value::Array(a)) => a.iter().collect(),
        Some(s @ Value::String(_)) => vec![s],
        Some(_) => return Err(err("categories", "is not an array".into())),
        None => return Err(err("categories", "is missing".into())),
    };
    let mut categories = Vec::new();
    for c in raw {
        let name = c
            .as_str()
            .ok_or_else(|| err("categories", format!("{c} is not a string")))?;
        let cat: Category = serde_json::from_value(Value::String(name.trim().to_lowercase()))
            .map_err(|_| {
                err(
                    "categories",
                    format!(
                        "unknown category {name:?} (one of identity, career, interests, relationships, health, finance, learning, travel, productivity, private)"
                    ),
                )
            })?;
        if !categories.contains(&cat) {
            categories.push(cat);
        }
    }
    if categories.is_empty() {
        return Err(err("categories", "is empty".into()));
    }
    let (subject, note) = match o.get("subject") {
        None | Some(Value::Null) => (None, None),
        Some(Value::String(s)) => {
            let norm = s.trim().to_lowercase().replace([' ', '-'], "_");
            if norm.is_empty() || norm == "null" || norm == "none" {
                (None, None)
            } else if subjects().contains(&norm.as_str()) {
                (Some(norm), None)
            } else {
                (
                    None,
                    Some(err(
                        "subject",
                        format!("{s:?} is not a known slot; kept with subject null"),
                    )),
                )
            }
        }
        Some(_) => return Err(err("subject", "is not a string or null".into())),
    };
    Ok((
        Extracted {
            memory,
            memory_type,
            categories,
            subject,
        },
        note,
    ))
}

// ---------------------------------------------------------------------------------------------
// Matching and evaluation.

const STOP: [&str; 52] = [
    "a", "an", "the", "is", "are", "am", "be", "been", "to", "of", "in", "on", "at", "for", "with",
    "and", "or", "their", "they", "them", "theirs", "has", "have", "had", "as", "by", "from", "it",
    "its", "this", "that", "who", "was", "were", "named", "does", "do", "did", "user", "s", "i",
    "my", "me", "we", "our", "you", "your", "so", "very", "just", "about", "now",
];

fn stem(w: &str) -> String {
    let n = w.chars().count();
    let strip = |suf: &str, min: usize| n > min && w.ends_with(suf);
    let s = if strip("ing", 5) {
        &w[..w.len() - 3]
    } else if strip("ly", 5) || strip("ed", 4) {
        &w[..w.len() - 2]
    } else if strip("s", 3) && !w.ends_with("ss") {
        &w[..w.len() - 1]
    } else {
        w
    };
    s.to_owned()
}

fn tokens(text: &str) -> BTreeSet<String> {
    text.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty() && !STOP.contains(w))
        .map(stem)
        .collect()
}

fn numbers(t: &BTreeSet<String>) -> BTreeSet<&String> {
    t.iter()
        .filter(|w| w.chars().all(|c| c.is_ascii_digit()))
        .collect()
}

fn numbers_disagree(a: &BTreeSet<String>, b: &BTreeSet<String>) -> bool {
    let (na, nb) = (numbers(a), numbers(b));
    !na.is_empty() && !nb.is_empty() && na.is_disjoint(&nb)
}

/// Whether two memories state the same fact: with one subject on both, the same slot and an
/// equivalent value (the words after the leading verb overlap by at least 60% of the shorter,
/// and numbers agree); otherwise, the texts' content words overlap (Dice at least 0.5, numbers
/// agree). Two different subjects are never the same fact. Type and categories are not compared.
pub fn same_fact(a: &Extracted, b: &Extracted) -> bool {
    match (&a.subject, &b.subject) {
        (Some(x), Some(y)) if x != y => false,
        (Some(_), Some(_)) => {
            let value = |t: &str| {
                let rest = t.trim().split_once(char::is_whitespace).map_or("", |x| x.1);
                tokens(rest)
            };
            let (va, vb) = (value(&a.memory), value(&b.memory));
            if va.is_empty() || vb.is_empty() {
                return a.memory.trim().eq_ignore_ascii_case(b.memory.trim());
            }
            if numbers_disagree(&va, &vb) {
                return false;
            }
            let common = va.intersection(&vb).count() as f64;
            common / va.len().min(vb.len()) as f64 >= 0.6
        }
        _ => {
            let (ta, tb) = (tokens(&a.memory), tokens(&b.memory));
            if ta.is_empty() || tb.is_empty() {
                return a.memory.trim().eq_ignore_ascii_case(b.memory.trim());
            }
            if numbers_disagree(&ta, &tb) {
                return false;
            }
            let common = ta.intersection(&tb).count() as f64;
            2.0 * common / (ta.len() + tb.len()) as f64 >= 0.5
        }
    }
}

/// Pairs (predicted, gold) matched one to one by [`same_fact`], greedily in order.
pub fn match_facts(pred: &[Extracted], gold: &[Extracted]) -> Vec<(usize, usize)> {
    let mut used = vec![false; gold.len()];
    let mut out = Vec::new();
    for (i, p) in pred.iter().enumerate() {
        if let Some(j) = (0..gold.len()).find(|&j| !used[j] && same_fact(p, &gold[j])) {
            used[j] = true;
            out.push((i, j));
        }
    }
    out
}

/// Recall for one category: gold memories of the category, and how many were found.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct CategoryRecall {
    pub gold: usize,
    pub found: usize,
}

/// Precision, recall and F1 over a labelled set, with what matched items got right.
#[derive(Serialize, Deserialize, Clone, PartialEq, Debug, Default)]
pub struct Score {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub tp: usize,
    pub fp: usize,
    #[serde(rename = "fn")]
    pub fn_: usize,
    /// Of matched items: the type agrees.
    pub type_accuracy: f64,
    /// Of matched items: the categories share at least one.
    pub category_accuracy: f64,
    /// Of matched items: the subject is the same (both null counts).
    pub subject_accuracy: f64,
    /// Recall per gold category.
    pub per_category: BTreeMap<Category, CategoryRecall>,
}

/// Scores predictions against gold, conversation by conversation (`pred[i]` against `gold[i]`).
pub fn evaluate(pred: &[Vec<Extracted>], gold: &[Vec<Extracted>]) -> Score {
    let mut s = Score::default();
    let (mut ty, mut cat, mut subj) = (0usize, 0usize, 0usize);
    let empty = Vec::new();
    for i in 0..pred.len().max(gold.len()) {
        let p = pred.get(i).unwrap_or(&empty);
        let gd = gold.get(i).unwrap_or(&empty);
        let m = match_facts(p, gd);
        s.tp += m.len();
        s.fp += p.len() - m.len();
        s.fn_ += gd.len() - m.len();
        for &(a, b) in &m {
            ty += usize::from(p[a].memory_type == gd[b].memory_type);
            cat += usize::from(p[a].categories.iter().any(|c| gd[b].categories.contains(c)));
            subj += usize::from(p[a].subject == gd[b].subject);
        }
        let found: BTreeSet<usize> = m.iter().map(|x| x.1).collect();
        for (j, item) in gd.iter().enumerate() {
            for c in &item.categories {
                let e = s.per_category.entry(*c).or_default();
                e.gold += 1;
                e.found += usize::from(found.contains(&j));
            }
        }
    }
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    s.precision = ratio(s.tp, s.tp + s.fp);
    s.recall = ratio(s.tp, s.tp + s.fn_);
    s.f1 = if s.precision + s.recall == 0.0 {
        0.0
    } else {
        2.0 * s.precision * s.recall / (s.precision + s.recall)
    };
    s.type_accuracy = ratio(ty, s.tp);
    s.category_accuracy = ratio(cat, s.tp);
    s.subject_accuracy = ratio(subj, s.tp);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(t: &str) -> Vec<Message> {
        vec![Message::user(t)]
    }

    fn memories(msgs: &[Message]) -> Vec<String> {
        extract_rules(msgs).into_iter().map(|e| e.memory).collect()
    }

    #[test]
    fn slot_statements_become_third_person_facts() {
        let got = extract_rules(&user("I'm a data engineer at Acme, and I live in Lisbon."));
        let mut pairs: Vec<(&str, Option<&str>)> = got
            .iter()
            .map(|e| (e.memory.as_str(), e.subject.as_deref()))
            .collect();
        pairs.sort();
        assert_eq!(
            pairs,
            [
                ("Is a data engineer", Some("job_title")),
                ("Lives in Lisbon", Some("home_city")),
                ("Works at Acme", Some("employer")),
            ]
        );
        assert!(got.iter().all(|e| e.memory_type == MemoryType::Semantic));
        assert!(got.iter().any(|e| e.categories == [Category::Identity]));
    }

    #[test]
    fn questions_hypotheticals_and_negations_give_nothing() {
        for t in [
            "Should I move to Berlin?",
            "Do you think I live in Berlin?",
            "If I lived in Berlin I'd cycle everywhere.",
            "Maybe I'm vegan after all.",
            "I don't live in Berlin anymore.",
            "I'm not vegetarian, I just like salads",
            "No, I never moved to Berlin.",
        ] {
            let got = extract_rules(&user(t));
            assert!(
                got.iter().all(|e| e.subject.is_none()),
                "{t:?} gave {got:?}"
            );
            assert!(
                !got.iter()
                    .any(|e| e.memory.contains("Berlin") || e.memory.contains("vegetarian")),
                "{t:?} gave {got:?}"
            );
        }
        // A lasting negative habit is a fact.
        assert_eq!(memories(&user("I don't eat pork.")), ["Does not eat pork"]);
    }

    #[test]
    fn assistant_turns_quotes_and_other_people_are_not_the_user() {
        let msgs = vec![
            Message::user("Plan me a weekend in Porto."),
            Message::assistant(
                "Since you live in Madrid and I love trains, take the overnight one.",
            ),
            Message::system("I am a data engineer at OpenAI."),
        ];
        assert!(extract_rules(&msgs).is_empty());
        assert!(extract_rules(&user(
            "My boss keeps saying 'I'm moving to Singapore next year'."
        ))
        .is_empty());
        assert!(extract_rules(&user("He said I work at Google, which is wrong.")).is_empty());
        assert!(extract_rules(&user("She is a huge Liverpool fan.")).is_empty());
    }

    #[test]
    fn past_events_with_a_time_are_episodic() {
        let got = extract_rules(&user("Yesterday I ran my first marathon!"));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].memory, "Ran their first marathon yesterday");
        assert_eq!(got[0].memory_type, MemoryType::Episodic);
        assert_eq!(got[0].categories[0], Category::Health);
        // Past tense with no time expression: not an event the rules can date.
        assert!(extract_rules(&user("I ran a lot as a kid.")).is_empty());
    }

    #[test]
    fn the_latest_value_of_a_slot_wins_within_a_conversation() {
        let got = extract_rules(&[
            Message::user("I live in Paris."),
            Message::user("Sorry, typo: I live in Lyon."),
        ]);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].memory, "Lives in Lyon");
    }

    #[test]
    fn the_slot_list_is_fixed_and_categorised() {
        assert_eq!(subjects().len(), 26);
        assert!(subjects().contains(&"home_city"));
        assert!(subjects().iter().all(|s| subject_category(s).is_some()));
        let cats: BTreeSet<Category> = subjects()
            .iter()
            .filter_map(|s| subject_category(s))
            .collect();
        assert_eq!(cats.len(), 10, "every category has a slot");
    }

    #[test]
    fn extracted_serializes_with_memsync_names() {
        let e = Extracted::slot("diet", "Is vegan".into());
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"memory": "Is vegan", "type": "semantic", "categories": ["health"], "subject": "diet"})
        );
        let m: Message = serde_json::from_str(r#"{"role":"developer","content":"x"}"#).unwrap();
        assert_eq!(m.role, Role::System);
    }

    #[test]
    fn the_prompt_names_categories_slots_and_only_the_conversation() {
        let p = llm_extraction_prompt(&[
            Message::system("secret instructions"),
            Message::user("I live in Porto"),
            Message::assistant("Nice!"),
        ]);
        assert_eq!(p.len(), 2);
        assert_eq!((p[0].role, p[1].role), (Role::System, Role::User));
        for c in [
            "identity",
            "productivity",
            "private",
            "home_city",
            "favorite_team",
            "JSON array",
        ] {
            assert!(p[0].content.contains(c), "{c}");
        }
        assert!(p[1].content.contains("USER: I live in Porto"));
        assert!(p[1].content.contains("ASSISTANT: Nice!"));
        assert!(!p[1].content.contains("secret"));
    }

    #[test]
    fn parser_reads_fences_and_prose() {
        let fenced = "Here you go:\n```json\n[{\"memory\": \"Lives in Porto\", \"type\": \"semantic\", \"categories\": [\"identity\"], \"subject\": \"home_city\"}]\n```\nLet me know!";
        let got = parse_llm_extraction(fenced).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].subject.as_deref(), Some("home_city"));

        let prose = "Sure! The memories [as requested] are: [{\"memory\": \"Went to Rome last week\", \"type\": \"Episodic\", \"categories\": \"travel\"}] — done.";
        let got = parse_llm_extraction(prose).unwrap();
        assert_eq!(got[0].memory_type, MemoryType::Episodic);
        assert_eq!(got[0].categories, [Category::Travel]);
        assert_eq!(got[0].subject, None);

        let wrapped = r#"{"memories": [{"memory": "Is vegan", "type": "semantic", "categories": ["health"], "subject": "Diet"}]}"#;
        assert_eq!(
            parse_llm_extraction(wrapped).unwrap()[0].subject.as_deref(),
            Some("diet")
        );
        assert_eq!(
            parse_llm_extraction("Nothing to remember: []").unwrap(),
            vec![]
        );
    }

    #[test]
    fn parser_drops_bad_items_and_names_the_field() {
        let text = r#"[
            {"memory": "Likes jazz", "type": "semantic", "categories": ["hobbies"], "subject": null},
            {"memory": "Is vegan", "type": "semantic", "categories": ["health"], "subject": "food_style"},
            {"memory": "Ran a race", "type": "event", "categories": ["health"]},
            {"memory": "", "type": "semantic", "categories": ["health"]}
        ]"#;
        let (items, notes) = parse_llm_extraction_report(text).unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(
            (items[0].memory.as_str(), items[0].subject.as_deref()),
            ("Is vegan", None)
        );
        let said: Vec<String> = notes.iter().map(ToString::to_string).collect();
        assert!(
            said[0].starts_with("item 0: categories: unknown category \"hobbies\""),
            "{}",
            said[0]
        );
        assert!(
            said[1].starts_with("item 1: subject: \"food_style\""),
            "{}",
            said[1]
        );
        assert!(
            said[2].starts_with("item 2: type: unknown type \"event\""),
            "{}",
            said[2]
        );
        assert!(
            said[3].starts_with("item 3: memory: is empty"),
            "{}",
            said[3]
        );

        // Every item dropped: the first reason is the error.
        let err = parse_llm_extraction(
            r#"[{"memory": "Likes jazz", "type": "semantic", "categories": ["music"]}]"#,
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                ExtractError::Item {
                    field: "categories",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("\"music\""));

        assert_eq!(
            parse_llm_extraction("I could not find any."),
            Err(ExtractError::NoJson)
        );
        assert!(matches!(
            parse_llm_extraction("[{\"memory\": "),
            Err(ExtractError::Json(_))
        ));
    }

    fn fact(memory: &str, subject: Option<&str>) -> Extracted {
        Extracted {
            memory: memory.into(),
            memory_type: MemoryType::Semantic,
            categories: vec![Category::Identity],
            subject: subject.map(str::to_owned),
        }
    }

    #[test]
    fn same_fact_compares_slot_values_and_text_overlap() {
        let city = Some("home_city");
        assert!(same_fact(
            &fact("Lives in Lisbon", city),
            &fact("Lives in Lisbon, Portugal", city)
        ));
        assert!(!same_fact(
            &fact("Lives in Lisbon", city),
            &fact("Lives in Porto", city)
        ));
        assert!(!same_fact(
            &fact("Lives in Lisbon", city),
            &fact("Lives in Lisbon", Some("hometown"))
        ));
        let age = Some("age");
        assert!(
            !same_fact(&fact("Is 29 years old", age), &fact("Is 34 years old", age)),
            "numbers disagree"
        );
        let job = Some("job_title");
        assert!(same_fact(
            &fact("Is a data engineer", job),
            &fact("Is a staff data engineer", job)
        ));
        assert!(!same_fact(
            &fact("Is an engineering manager", job),
            &fact("Is a staff data engineer", job)
        ));
        assert!(same_fact(
            &fact(
                "Went hiking in the Alps last weekend with their brother",
                None
            ),
            &fact("Went hiking in the Alps last weekend with brother", None)
        ));
        assert!(!same_fact(
            &fact("Has a brother", None),
            &fact("Has a sister who lives in Toronto", None)
        ));
    }

    #[test]
    fn evaluate_counts_matches_one_to_one() {
        let gold = vec![
            vec![
                fact("Lives in Lisbon", Some("home_city")),
                fact("Has a brother", None),
            ],
            vec![],
        ];
        let pred = vec![
            vec![
                fact("Lives in Lisbon", Some("home_city")),
                fact("Lives in Lisbon", Some("home_city")),
            ],
            vec![fact("Likes jazz", None)],
        ];
        let s = evaluate(&pred, &gold);
        assert_eq!((s.tp, s.fp, s.fn_), (1, 2, 1));
        assert!((s.precision - 1.0 / 3.0).abs() < 1e-9);
        assert!((s.recall - 0.5).abs() < 1e-9);
        assert!((s.f1 - 0.4).abs() < 1e-9);
        assert_eq!(
            s.per_category[&Category::Identity],
            CategoryRecall { gold: 2, found: 1 }
        );
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["fn"], 1);
    }
}

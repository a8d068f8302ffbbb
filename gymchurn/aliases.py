"""Header names accepted in questionnaire files, and the database column each one fills.

Headers are compared after ``normalize_header``, so ``Near Location``,
``near-location`` and ``NEAR_LOCATION`` are the same name. A header that is not
in this table is ignored and reported, even when it resembles a feature or the
label (``Churn_label``, ``Total_Frequency``): using such a column would leak
the outcome into the features.
"""

import re
import unicodedata

from gymchurn.schema import CHURNED, CLIENT_ID, FEATURES


def normalize_header(name: str) -> str:
    """Return ``name`` in the form the alias table is keyed by.

    The text is NFKC-normalised and lowercased, "ё" becomes "е", and each run of
    characters other than letters and digits becomes one "_".
    """
    text = unicodedata.normalize("NFKC", name).lower().replace("ё", "е")
    return re.sub(r"[\W_]+", "_", text).strip("_")


# Spellings of each column besides its database name. The Russian names are
# those of Russian-language exports of the same questionnaire.
_SPELLINGS = {
    "gender": ["пол"],
    "near_location": [
        "рядом_с_клубом",
        "рядом_с_фитнес_центром",
        "близко_к_клубу",
        "живет_рядом",
        "живет_или_работает_рядом",
        "проживание_рядом",
    ],
    "partner": [
        "партнер",
        "сотрудник_партнера",
        "сотрудник_компании_партнера",
        "компания_партнер",
    ],
    "promo_friends": [
        "промо_друзья",
        "промо_друг",
        "приведи_друга",
        "акция_приведи_друга",
        "по_приглашению_друга",
    ],
    "phone": ["телефон", "есть_телефон", "наличие_телефона", "контактный_телефон"],
    "contract_period": [
        "срок_абонемента",
        "длительность_абонемента",
        "период_абонемента",
        "срок_контракта",
        "длительность_контракта",
    ],
    "group_visits": [
        "групповые_занятия",
        "групповые_посещения",
        "групповые_тренировки",
        "посещение_групповых_занятий",
    ],
    "age": ["возраст"],
    "avg_additional_charges_total": [
        "доп_расходы_всего",
        "доп_расходы",
        "дополнительные_расходы",
        "дополнительные_расходы_всего",
        "выручка_от_других_услуг",
        "выручка_доп_услуг",
    ],
    "month_to_end_contract": [
        "месяцев_до_конца_абонемента",
        "месяцев_до_окончания_абонемента",
        "до_конца_абонемента",
        "срок_до_окончания_абонемента",
        "месяцев_до_конца_контракта",
    ],
    "lifetime": [
        "время_с_первого_визита",
        "время_с_первого_обращения",
        "месяцев_с_первого_визита",
        "срок_жизни",
        "лайфтайм",
    ],
    "avg_class_frequency_total": [
        "частота_посещений_всего",
        "частота_посещений_за_все_время",
        "средняя_частота_посещений",
        "средняя_частота_посещений_всего",
    ],
    "avg_class_frequency_current_month": [
        "частота_посещений_в_месяц",
        "частота_посещений_за_месяц",
        "частота_посещений_в_текущем_месяце",
        "частота_посещений_текущий_месяц",
        "средняя_частота_посещений_за_месяц",
    ],
    CHURNED: ["churn", "отток", "факт_оттока", "ушел"],
}


def _build_aliases() -> dict[str, str]:
    aliases = {}
    for target in [*FEATURES, CHURNED]:
        for spelling in [target, *_SPELLINGS.get(target, [])]:
            key = normalize_header(spelling)
            if aliases.get(key, target) != target:
                raise ValueError(
                    f"header alias {spelling!r} names both {aliases[key]} and {target}"
                )
            aliases[key] = target
    return aliases


HEADER_ALIASES = _build_aliases()
"""Normalised header name to the feature or label column it fills."""

# Headers of the client key, in order of preference: a file with both a
# client_id and a member_id column takes client_id and ignores member_id.
CLIENT_KEY_ALIASES = [
    {normalize_header(name) for name in [CLIENT_ID, "clientid", "id_клиента", "код_клиента"]},
    {normalize_header(name) for name in ["member_id", "memberid"]},
]

"""Trigger words and scope breakers of the rule-based labeler.

The CheXpert labeler matches its negation/uncertainty rules on a dependency parse (NegBio ngrex patterns). There is
no parser here, so each rule family of that catalogue is written as a regular expression over normalised text plus a
scope: a *forward* trigger ("no", "without", "possible") covers the words after it up to a scope breaker, a *backward*
trigger ("... is not seen", "... has resolved", "... may be present") covers the noun phrase before it. The families
and their order follow the published description: pre-negation uncertainty, negation, post-negation uncertainty.
"""

from __future__ import annotations

import re


def _rx(*alternatives: str) -> re.Pattern[str]:
    return re.compile(r"\b(?:" + "|".join(alternatives) + r")\b")


_COPULA = r"(?:is|are|was|were|be|been|has|have|had|has been|have been|remains?|appears?|appeared|seems?|looks?)"
_ADVERBS = (
    r"(?:(?:now|again|currently|otherwise|previously|completely|nearly|almost|largely|essentially|entirely|also|"
    r"still|overall|grossly|stably|likely|probably|definitely|clearly|convincingly|readily|significantly)\s+)*"
)
_SEEN = (
    r"(?:seen|identified|present|visuali[sz]ed|evident|demonstrated|noted|detected|apparent|observed|visible|shown|"
    r"depicted|found|enlarged|increased|dilated|widened)"
)
_CHANGE = r"(?:change|changed|increase|decrease|worsening|improvement|progression|difference)"

# --- pre-negation uncertainty: matched first so that "cannot exclude X" / "no new X" are not read as negations.
PRE_UNCERTAINTY_FWD = _rx(
    r"(?:cannot|can not|can't|could not|couldn't) (?:be )?(?:entirely |completely |totally |definitely |fully )?"
    r"(?:exclude|excluded|rule out|ruled out)",
    r"(?:difficult|hard|unable) to (?:entirely |completely )?(?:exclude|rule out)",
    r"no (?:\w+ )?evidence to rule out",
    r"no new",
    r"no definite",
    r"no (?:definitive|obvious)",
)
PRE_UNCERTAINTY_BWD = re.compile(
    r"\b(?:"
    + _COPULA
    + r"\s+)?"
    + _ADVERBS
    + r"(?:cannot|can not|can't|could not|couldn't|not|may not|might not)\s+(?:be\s+)?"
    r"(?:entirely\s+|completely\s+|totally\s+|definitely\s+|fully\s+)?(?:excluded|ruled out)\b"
)

# --- negation.
# "no change in the small effusion", "without significant interval change": the finding is still there.
_PSEUDO_AFTER_NO = (
    r"(?!\s+(?:(?:significant|appreciable|definite|major|substantial|interval|apparent|further|real|other)\s+)*"
    + _CHANGE
    + r"\b)"
)
NEGATION_FWD = _rx(
    r"no" + _PSEUDO_AFTER_NO,
    r"without" + _PSEUDO_AFTER_NO,
    r"negative for",
    r"free of",
    r"clear of",
    r"absence of",
    r"absent",
    r"resolution of",
    r"resolved",
    r"removal of",
    r"removed",
    r"clearing of",
    r"disappearance of",
    r"history of",
    r"rule out",
    r"ruled out",
    r"rules out",
    r"exclude",
    r"excluded",
    r"nor",
    r"never",
    r"none",
    r"there (?:is|are) not",
)
# Backward triggers follow the noun phrase they cover ("the effusion on the right has resolved").
NEGATION_BWD = re.compile(
    r"\b(?:" + _COPULA + r"\s+)?" + _ADVERBS + r"(?:(?:resolved|cleared|removed|absent|gone|excluded|negative)\b"
    r"|(?:not|no longer)\s+" + _ADVERBS + _SEEN + r"\b)"
)
# Normality words only negate anatomy ("heart size is normal", "normal cardiac silhouette"): nobody writes that a
# pathology is normal, and restricting them keeps "cardiomegaly and the lungs are clear" positive.
NORMAL_FWD = _rx(r"normal", r"unremarkable", r"negative")
NORMAL_BWD = re.compile(
    r"\b(?:" + _COPULA + r"\s+)?" + _ADVERBS + r"(?:(?:at|within|near|in)\s+)?(?:the\s+)?"
    r"(?:normal|unremarkable|wnl|clear|negative|not enlarged|(?:of|in) normal (?:size|limits)"
    r"|normal (?:limits|range)|upper limits? (?:of )?normal|top (?:of )?normal|upper normal|high normal)\b"
)

# --- post-negation uncertainty (hedges).
UNCERTAINTY_FWD = _rx(
    r"possibl[ey]",
    r"probabl[ey]",
    r"presumabl[ey]",
    r"presumed",
    r"questionabl[ey]",
    r"question of",
    r"questioned",
    r"suspect(?:ed|s)?",
    r"suspicious",
    r"suspicion",
    r"suggest(?:s|ed|ing|ive|ion)?",
    r"concern(?:s|ing)?",
    r"worrisome",
    r"may",
    r"might",
    r"could",
    r"maybe",
    r"perhaps",
    r"versus",
    r"vs",
    r"differential",
    r"consider(?:ed|ation)?",
    r"favou?r(?:ed|s)?",
    r"unlikely",
    r"less likely",
    r"equivocal",
    r"indeterminate",
    r"uncertain",
    r"correlat\w*",
    r"secondary to",
    r"possibility",
)
UNCERTAINTY_BWD = re.compile(
    r"\b(?:(?:"
    + _COPULA
    + r")\s+)?"
    + _ADVERBS
    + r"(?:possible|suspected|questioned|questionable|in question|equivocal|a consideration|considered|favou?red"
    r"|less likely|unlikely|suggested|obscured|not appreciated"
    r"|not (?:well|clearly|optimally|adequately|fully) (?:seen|visuali[sz]ed|evaluated|assessed)"
    r"|(?:poorly|incompletely|not well) (?:seen|evaluated|visuali[sz]ed|assessed)"
    r"|(?:may|might|could|can)\s+(?:also\s+|possibly\s+|still\s+|not\s+)?(?:be|have been)\s+"
    r"(?:present|seen|noted|identified|there|possible|demonstrated|visible|detected|apparent|evident))\b"
)
# "X or Y", "X versus Y": a differential is uncertain for each member (unless negated: "no X or Y").
COORDINATION = _rx(r"or", r"versus", r"vs")
LATERALITY = _rx(r"right", r"left", r"bilateral", r"unilateral", r"upper", r"lower", r"mid", r"middle")
# CheXpert treats these Edema phrases as uncertain on their own (fluid overload signs, not edema itself).
ALWAYS_UNCERTAIN = _rx(r"vascular congestion", r"pulmonary congestion", r"indistinctness", r"vascular prominence")
# CHF / heart failure also implies an uncertain Cardiomegaly.
HEART_FAILURE = _rx(r"heart failure", r"chf")

# --- anatomy anchors ("heart size", "mediastinal contour") need a qualifier in their clause.
SIZE_QUALIFIER = {
    "Cardiomegaly": _rx(r"enlarg\w*", r"large", r"larger", r"increas\w*", r"prominen\w*", r"big", r"globular"),
    "Enlarged Cardiomediastinum": _rx(r"enlarg\w*", r"large", r"increas\w*", r"prominen\w*", r"widen\w*", r"wide"),
}
# "borderline heart size" is uncertain (a CheXpert rule). CheXpert's added rules also make "stable / unchanged
# cardiomediastinal silhouette" uncertain; that is not followed here: stability says nothing about the size, and a
# reader takes "stable cardiomediastinal silhouette. Lungs clear." as a normal study.
BORDERLINE_QUALIFIER = _rx(r"borderline")

# --- scope breakers.
# Forward scopes ("no X, Y or Z") run over a list but stop at a new clause: punctuation, contrast words, a verb,
# or a comma that opens a new noun phrase with a determiner ("no effusion, the heart is enlarged").
FORWARD_STOP = re.compile(
    r"[.;:?!\n]|,\s*(?=(?:the|there|a|an|this|these|it|which|but|however|although|likely|possibly|probably|may|could|"
    r"consistent|compatible|concerning|representing|with|and the|and there)\b)"
    r"|\b(?:but|however|although|though|whereas|while|which|except|aside from|apart from|other than|otherwise|"
    r"with|there|is|are|was|were|has|have|had|remains?|remained|appears?|appeared|seen|noted|identified|"
    r"demonstrated|present|persists?|persisting|secondary to|due to|consistent|compatible|likely|representing|"
    r"reflecting)\b"
)
# Short forward scopes ("normal heart size, ...") also stop at any comma or "and".
SHORT_FORWARD_STOP = re.compile(r",|\band\b")
# Backward scopes cover the noun phrase before the trigger.
BACKWARD_STOP = re.compile(
    r"[.;:?!\n]|\b(?:but|however|although|though|whereas|while|which|with|without|no|than|there|is|are|was|were|"
    r"has|have|had|seen|noted|shows?|demonstrat\w*|consistent|compatible|likely|representing|may|might|could)\b"
)
CONJUNCTION = _rx(r"and", r"or")
SINGULAR_COPULA = re.compile(r"(?:is|was|has|remains|appears)\b")
# A clause for anchor qualifiers: "the heart is enlarged" but not "normal heart, enlarged hila".
CLAUSE_STOP = re.compile(
    r"[.;:?!\n,]|\b(?:but|however|although|though|whereas|while|which|with|without|than|compared|and (?:the|there))\b"
)
# = [.?!](?=\s|$)|\n, written to start with a character class so that the regex engine can skip ahead to it.
SENTENCE_END = re.compile(r"[.?!\n](?:(?<=\n)|(?=\s|$))")

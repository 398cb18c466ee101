"""Free-text FINDINGS sections written from the generator's findings with varied templates.

Laterality, severity, negated normals ("No pneumothorax."), hedges ("may represent atelectasis"), comparisons
("unchanged", "new") and a realistic topic order (devices, heart and mediastinum, lungs, pleura, bones; or a
permutation used in practice). The words chosen for each finding agree with its labels: hedged findings use
uncertainty phrases, negated observations use negation phrases, and no phrase mentions an observation the labels
leave blank.
"""

from __future__ import annotations

import numpy as np

from .findings import Finding

ORDERS = (
    ("devices", "cardio", "lungs", "pleura", "bones"),
    ("devices", "lungs", "pleura", "cardio", "bones"),
    ("cardio", "lungs", "pleura", "devices", "bones"),
    ("lungs", "pleura", "cardio", "devices", "bones"),
)
ZONE_WORDS = {
    "lung base": ["{s} lung base", "{s} base", "{s} lower lung"],
    "mid zone lung": ["{s} mid lung", "{s} mid lung zone"],
    "upper zone lung": ["{s} upper lung", "{s} upper lung zone"],
}
NEGATIONS = {
    "Pleural Effusion": ["pleural effusion", "pleural effusions", "effusion"],
    "Pneumothorax": ["pneumothorax"],
    "Consolidation": ["focal consolidation", "consolidation"],
    "Edema": ["pulmonary edema", "edema"],
    "Pneumonia": ["pneumonia"],
    "Lung Opacity": ["focal opacity"],
    "Atelectasis": ["atelectasis"],
    "Lung Lesion": ["suspicious pulmonary nodule", "pulmonary nodules or masses"],
}
CARDIO_NEG = {
    "Cardiomegaly": [
        "Heart size is normal.",
        "The heart is not enlarged.",
        "Normal heart size.",
        "The cardiac silhouette is normal in size.",
    ],
    "Enlarged Cardiomediastinum": [
        "The mediastinal contours are normal.",
        "The cardiomediastinal silhouette is unremarkable.",
        "Mediastinal contours are within normal limits.",
    ],
}
FRACTURE_NEG = ["No displaced rib fracture.", "No acute fracture is seen.", "No fracture is identified."]


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _pick(rng, options):
    return options[int(rng.integers(len(options)))]


def _side_word(side: str | None) -> str:
    return {"right": "right", "left": "left", "bilateral": "bilateral"}.get(side or "", "")


def _zone(rng, f: Finding) -> str:
    zones = f.text.get("zones") or ["lung base"]
    sides = ["right", "left"] if f.side == "bilateral" else [f.side]
    if len(sides) == 2:
        return "both lungs" if zones[0] != "lung base" else "both lung bases"
    return _pick(rng, ZONE_WORDS[zones[0]]).format(s=sides[0])


def _change(rng, comparison: bool) -> str:
    if not comparison or rng.random() < 0.5:
        return ""
    return _pick(rng, ["unchanged ", "new ", "stable ", "increased ", "slightly decreased "])


class ReportWriter:
    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.comparison = bool(rng.random() < 0.35)

    def write(self, findings: list[Finding], negated: list[str]) -> str:
        by_topic = {t: [] for t in ORDERS[0]}
        for f in findings:
            by_topic[self._topic(f)].append(self.sentence(f))
        self._negations(by_topic, negated, findings)
        order = _pick(self.rng, ORDERS)
        sentences = [s for t in order for s in by_topic[t]]
        if not sentences:
            # Nothing found and nothing negated (rare). Uses no randomness, so every other study is unchanged; these
            # studies used to raise IndexError, so no synthcxr-v1 output differs.
            sentences = ["No acute cardiopulmonary abnormality."]
        if self.comparison and self.rng.random() < 0.5:
            sentences[0] = (
                _pick(
                    self.rng,
                    [
                        "Compared to the prior study, ",
                        "As compared to the previous radiograph, ",
                        "In comparison with the prior exam, ",
                    ],
                )
                + sentences[0][:1].lower()
                + sentences[0][1:]
            )
        return " ".join(sentences)

    @staticmethod
    def _topic(f: Finding) -> str:
        if "Support Devices" in f.observations:
            return "devices"
        if f.kind in ("cardiomegaly", "mediastinum"):
            return "cardio"
        if f.kind in ("effusion", "pneumothorax", "pleural_thickening"):
            return "pleura"
        return "bones" if f.kind == "rib_fracture" else "lungs"

    # ------------------------------------------------------------------ negated normals
    def _negations(self, by_topic: dict, negated: list[str], findings: list[Finding]) -> None:
        rng = self.rng
        for obs, options in CARDIO_NEG.items():
            if obs in negated:
                by_topic["cardio"].append(_pick(rng, options))
        if "Fracture" in negated:
            by_topic["bones"].append(_pick(rng, FRACTURE_NEG))
        lung_terms = [
            _pick(rng, NEGATIONS[o])
            for o in ("Consolidation", "Edema", "Pneumonia", "Lung Opacity", "Atelectasis", "Lung Lesion")
            if o in negated
        ]
        pleura_terms = [_pick(rng, NEGATIONS[o]) for o in ("Pleural Effusion", "Pneumothorax") if o in negated]
        if (
            not any(f.kind in ("consolidation", "opacity", "atelectasis", "edema", "nodule", "mass") for f in findings)
            and rng.random() < 0.6
        ):
            by_topic["lungs"].insert(
                0,
                _pick(
                    rng, ["The lungs are clear.", "Lungs are well expanded and clear.", "The lungs are well aerated."]
                ),
            )
        if rng.random() < 0.5:
            by_topic["lungs"] += self._negation_sentences(lung_terms + pleura_terms)
        else:
            by_topic["lungs"] += self._negation_sentences(lung_terms)
            by_topic["pleura"] += self._negation_sentences(pleura_terms)

    def _negation_sentences(self, terms: list[str]) -> list[str]:
        if not terms:
            return []
        rng = self.rng
        if len(terms) > 3 and rng.random() < 0.5:
            return self._negation_sentences(terms[:2]) + self._negation_sentences(terms[2:])
        joined = (
            terms[0]
            if len(terms) == 1
            else ", ".join(terms[:-1]) + (" or " if len(terms) == 2 else ", or ") + terms[-1]
        )
        return [_pick(rng, ["No {t}.", "There is no {t}.", "No evidence of {t}.", "No {t} is seen."]).format(t=joined)]

    # ------------------------------------------------------------------ positive findings
    def sentence(self, f: Finding) -> str:
        return _cap(getattr(self, f"_s_{f.kind}")(f))

    def _s_cardiomegaly(self, f: Finding) -> str:
        sev = f.severity
        if f.text.get("hedged"):
            return _pick(
                self.rng,
                [
                    "Possible mild cardiomegaly.",
                    "The heart size is borderline enlarged.",
                    "Heart size is at the upper limits of normal, possibly mildly enlarged.",
                ],
            )
        ch = _change(self.rng, self.comparison)
        return _pick(
            self.rng,
            [
                f"{ch}{sev} cardiomegaly.",
                f"The heart is {sev}ly enlarged.",
                f"{ch}{sev} enlargement of the cardiac silhouette.",
            ],
        )

    def _s_mediastinum(self, f: Finding) -> str:
        if f.text.get("hedged"):
            return _pick(
                self.rng,
                ["Possible widening of the superior mediastinum.", "The mediastinum may be slightly widened."],
            )
        return _pick(
            self.rng,
            [
                "The superior mediastinum is widened.",
                "Widening of the mediastinal contours.",
                "Enlarged cardiomediastinal silhouette with a widened upper mediastinum.",
            ],
        )

    def _s_effusion(self, f: Finding) -> str:
        side, sev, rng = _side_word(f.side), f.severity, self.rng
        if f.text.get("hedged"):
            s = "both" if f.side == "bilateral" else f"the {side}"
            angles = "costophrenic angles" if f.side == "bilateral" else "costophrenic angle"
            return _pick(
                rng,
                [
                    f"Possible trace {side} pleural effusion.",
                    f"Blunting of {s} {angles} may reflect a trace pleural effusion.",
                ],
            )
        plural = "s" if f.side == "bilateral" else ""
        sev = "small" if sev == "small" and rng.random() < 0.7 else ("trace" if sev == "small" else sev)
        ch = _change(rng, self.comparison)
        return _pick(
            rng,
            [
                f"{ch}{sev} {side} pleural effusion{plural}.",
                f"There {'are' if plural else 'is a'} {ch}{sev} {side} pleural effusion{plural}.",
                f"{side} pleural effusion{plural}, {sev} in size.",
            ],
        )

    def _s_pneumothorax(self, f: Finding) -> str:
        side, rng = f.side, self.rng
        where = _pick(rng, ["apical", "apicolateral", ""]) if f.severity != "large" else ""
        if f.text.get("hedged"):
            return _pick(
                rng,
                [
                    f"Possible tiny {side} apical pneumothorax.",
                    f"A tiny {side} apical pneumothorax cannot be excluded.",
                ],
            )
        size = {"small": _pick(rng, ["small", "tiny"]), "moderate": "moderate", "large": "large"}[f.severity]
        words = " ".join(w for w in [size, side, where] if w)
        return _pick(
            rng, [f"There is a {words} pneumothorax.", f"{words} pneumothorax.", f"A {words} pneumothorax is present."]
        )

    def _s_pleural_thickening(self, f: Finding) -> str:
        side = _side_word(f.side)
        if f.text.get("apical"):
            return _pick(self.rng, [f"{side} apical pleural thickening.", f"Pleural thickening at the {side} apex."])
        return f"Pleural thickening along the {side} lateral chest wall."

    def _s_consolidation(self, f: Finding) -> str:
        rng = self.rng
        where = _zone(rng, f)
        base = _pick(
            rng,
            [
                f"focal consolidation in the {where}",
                f"consolidation at the {where}",
                f"{_change(rng, self.comparison)}{where} consolidation",
            ],
        )
        tail = {
            "stated": _pick(rng, [", consistent with pneumonia", ", compatible with pneumonia"]),
            "hedged": _pick(
                rng, [", concerning for pneumonia", ", which may represent pneumonia", ", possibly pneumonia"]
            ),
            "none": "",
        }[f.text["pneumonia"]]
        return f"{base}{tail}."

    def _s_opacity(self, f: Finding) -> str:
        where, rng = _zone(self.rng, f), self.rng
        base = _pick(
            rng,
            [
                f"patchy opacity in the {where}",
                f"ill-defined opacity at the {where}",
                f"{_change(rng, self.comparison)}{where} opacity",
            ],
        )
        tail = {
            "none": "",
            "atelectasis": _pick(rng, [", which may represent atelectasis", ", possibly atelectasis"]),
            "pneumonia": _pick(rng, ["; pneumonia cannot be excluded", ", possibly pneumonia"]),
            "both": _pick(rng, [", which may reflect atelectasis or pneumonia", ", atelectasis versus pneumonia"]),
            "infection": ", which could represent infection in the appropriate clinical setting",
        }[f.text["ddx"]]
        return f"{base}{tail}."

    def _s_atelectasis(self, f: Finding) -> str:
        rng = self.rng
        where = {"bilateral": "bibasilar", "right": "right basilar", "left": "left basilar"}[f.side]
        kind = "plate-like " if f.severity == "plate-like" else ""
        lift = (
            f" with mild elevation of the {f.side} hemidiaphragm"
            if f.params.get("volume_loss") and f.side != "bilateral"
            else ""
        )
        w = f.text["wording"]
        if w == "stated":
            return _pick(
                rng,
                [
                    f"{where} {kind}atelectasis{lift}.",
                    f"There is {kind}atelectasis at the "
                    f"{'lung bases' if f.side == 'bilateral' else f.side + ' base'}{lift}.",
                ],
            )
        if w == "likely":
            return _pick(rng, [f"Likely {where} {kind}atelectasis{lift}.", f"{where} atelectasis is likely{lift}."])
        return _pick(
            rng,
            [
                f"{where} opacities{lift}, likely atelectasis.",
                f"{where} opacity most likely reflects atelectasis{lift}.",
            ],
        )

    def _s_edema(self, f: Finding) -> str:
        rng, sev, w = self.rng, f.severity, f.text["wording"]
        if w == "congestion":
            return _pick(rng, ["Mild pulmonary vascular congestion.", "There is mild pulmonary vascular congestion."])
        if w == "hedged":
            return _pick(
                rng,
                [
                    "Possible mild pulmonary edema.",
                    "Mild interstitial edema is not excluded.",
                    "Findings may represent mild interstitial edema.",
                ],
            )
        ch = _change(rng, self.comparison)
        return _pick(
            rng,
            [
                f"{ch}{sev} pulmonary edema.",
                f"There is {ch}{sev} interstitial pulmonary edema.",
                f"Findings are consistent with {sev} pulmonary edema.",
            ],
        )

    def _s_nodule(self, f: Finding) -> str:
        where, d = _zone(self.rng, f), f.params["diameter_mm"]
        if f.text.get("hedged"):
            return f"A possible {d:.0f} mm nodule in the {where}; CT could be considered for further evaluation."
        return _pick(
            self.rng,
            [
                f"A {d:.0f} mm nodule projects over the {where}.",
                f"There is a {d:.0f} mm pulmonary nodule in the {where}.",
            ],
        )

    def _s_mass(self, f: Finding) -> str:
        where, d = _zone(self.rng, f), f.params["diameter_mm"] / 10
        return _pick(self.rng, [f"A {d:.1f} cm mass in the {where}.", f"There is a {d:.1f} cm {where} mass."])

    def _s_rib_fracture(self, f: Finding) -> str:
        from .anatomy import ORDINALS

        rib = f"{f.side} {ORDINALS[f.params['rib'] - 1]} posterior rib"
        if f.text.get("healed"):
            return _pick(self.rng, [f"Old healed fracture of the {rib}.", f"Healed {rib} fracture."])
        return _pick(self.rng, [f"Acute fracture of the {rib}.", f"There is a nondisplaced fracture of the {rib}."])

    def _s_ett(self, f: Finding) -> str:
        d = f.params["tip_above_carina_cm"]
        return _pick(
            self.rng,
            [
                f"Endotracheal tube terminates {d:.0f} cm above the carina.",
                f"ET tube tip is approximately {d:.0f} cm above the carina.",
            ],
        )

    def _s_ng_tube(self, f: Finding) -> str:
        return _pick(
            self.rng,
            [
                "Enteric tube courses below the diaphragm with the tip in the stomach.",
                "Nasogastric tube tip is in the stomach.",
            ],
        )

    def _s_cvc(self, f: Finding) -> str:
        side, access, tip = f.side, f.params["access"], f.params["tip"]
        return _pick(
            self.rng,
            [
                f"{side} {access} central venous catheter terminates in the {tip}.",
                f"{side} {access} line tip at the {tip}.",
            ],
        )

    def _s_picc(self, f: Finding) -> str:
        return _pick(
            self.rng,
            [
                f"{f.side}-sided PICC terminates in the {f.params['tip']}.",
                f"{f.side} PICC line tip projects over the {f.params['tip']}.",
            ],
        )

    def _s_pacemaker(self, f: Finding) -> str:
        return _pick(
            self.rng,
            [
                f"{f.side}-sided pacemaker with leads in the right atrium and right ventricle.",
                f"{f.side} chest wall pacer device with leads terminating in the right heart.",
            ],
        )

"""The paper's own numbers (Luong & Chen 2026), to print beside ours.

CR columns of Table 2 (the MR → CR pair: the same pair as our rt → CR) and Table 4, the
poisoned models' CR accuracy before fine-tuning (Table 1: BadNet; Table 6: InSent), and
the per-iteration times of Table 3. CA, ASR and Δ are in %; Table 2's FFT, LoRA, Back-Tr.,
SCPD and ONION rows are, by the paper's Appendix A.1, taken from Zhao et al. (2024b).

Table 5 (the ablation) is on SST-2, not CR, and the ✓ marks saying which components each
row has did not survive in our copy of the paper; :data:`ABLATION_CLAIMS` keeps what its
text states instead.
"""

from __future__ import annotations

#: Table 1 (BadNet) and Table 6 (InSent): CA (%) on CR of the poisoned model, no fine-tuning (MR → CR)
TABLE1_CR = {"badnet": {"BERT": 86.19, "RoBERTa": 83.87, "LLaMA": 75.10},
             "insent": {"BERT": 82.32, "RoBERTa": 88.39, "LLaMA": 85.94}}

#: Table 2, CR columns: (CA, ASR, Δ) per model, attack and method
TABLE2_CR: dict[str, dict[str, dict[str, tuple[float, float, float]]]] = {
    "BERT": {
        "badnet": {"fft": (90.53, 43.17, 47.36), "lora": (89.50, 92.58, -3.08), "pissa": (89.42, 83.16, 6.26),
                   "dora": (86.97, 98.75, -11.78), "olora": (88.90, 88.15, 0.75), "backtr": (89.29, 38.87, 50.42),
                   "scpd": (77.67, 37.42, 40.25), "onion": (88.25, 27.23, 61.02), "rora": (88.65, 2.70, 85.95)},
        "insent": {"fft": (91.35, 27.72, 63.63), "lora": (88.94, 84.20, 4.74), "pissa": (88.13, 98.13, -10.00),
                   "dora": (87.48, 98.96, -11.48), "olora": (89.03, 97.30, -8.27), "backtr": (87.48, 44.49, 42.99),
                   "scpd": (76.38, 33.88, 42.50), "onion": (87.09, 85.23, 1.86), "rora": (89.29, 1.46, 87.83)},
    },
    "RoBERTa": {
        "badnet": {"fft": (92.64, 46.08, 46.56), "lora": (92.26, 99.93, -7.67), "pissa": (92.90, 99.79, -6.89),
                   "dora": (92.65, 100.0, -7.35), "olora": (93.03, 91.89, 1.14), "backtr": (90.96, 38.66, 52.30),
                   "scpd": (80.64, 35.13, 45.51), "onion": (89.93, 29.72, 60.21), "rora": (93.81, 7.28, 86.53)},
        "insent": {"fft": (92.86, 20.30, 72.56), "lora": (92.69, 98.82, -6.13), "pissa": (92.13, 97.30, -5.17),
                   "dora": (92.39, 94.39, -2.00), "olora": (93.16, 54.89, 38.27), "backtr": (92.00, 67.35, 24.65),
                   "scpd": (81.54, 41.16, 40.38), "onion": (90.96, 97.08, -6.12), "rora": (92.90, 4.78, 88.12)},
    },
    "LLaMA": {
        "badnet": {"fft": (91.87, 99.58, -7.71), "lora": (92.39, 100.0, -7.61), "pissa": (92.26, 99.38, -7.12),
                   "dora": (90.71, 99.38, -8.67), "olora": (91.61, 98.96, -7.35), "backtr": (91.48, 41.37, 50.11),
                   "scpd": (81.80, 36.17, 45.63), "onion": (89.03, 30.56, 58.47), "rora": (92.77, 4.37, 88.40)},
        "insent": {"fft": (93.03, 90.23, 2.80), "lora": (92.39, 100.0, -7.61), "pissa": (92.00, 98.75, -6.75),
                   "dora": (91.35, 99.17, -7.82), "olora": (91.10, 98.75, -7.65), "backtr": (92.12, 93.97, -1.85),
                   "scpd": (81.03, 44.90, 36.13), "onion": (85.93, 99.16, -13.23), "rora": (92.13, 10.19, 81.94)},
    },
}

#: Table 4, CR columns: (CA, ASR) of each variant and the variant + RoRA
TABLE4_CR: dict[str, dict[str, dict[str, tuple[float, float]]]] = {
    "RoBERTa": {
        "badnet": {"lora": (92.26, 99.93), "rora": (93.81, 7.28), "pissa": (92.90, 99.79), "pissa+rora": (94.06, 31.39),
                   "dora": (92.65, 100.0), "dora+rora": (93.16, 4.99), "olora": (93.03, 91.89),
                   "olora+rora": (93.94, 14.97)},
        "insent": {"lora": (92.69, 98.82), "rora": (92.90, 4.78), "pissa": (92.13, 97.30), "pissa+rora": (92.90, 31.39),
                   "dora": (92.39, 94.39), "dora+rora": (91.61, 7.90), "olora": (93.16, 54.89),
                   "olora+rora": (93.16, 11.64)},
    },
    "LLaMA": {
        "badnet": {"lora": (92.39, 100.0), "rora": (92.77, 4.37), "pissa": (92.26, 99.38), "pissa+rora": (92.26, 66.74),
                   "dora": (90.71, 99.38), "dora+rora": (92.52, 55.51), "olora": (91.61, 98.96),
                   "olora+rora": (90.58, 27.44)},
        "insent": {"lora": (92.39, 100.0), "rora": (92.13, 10.19), "pissa": (92.00, 98.75), "pissa+rora": (93.03, 94.39),
                   "dora": (91.35, 99.17), "dora+rora": (91.61, 89.19), "olora": (91.10, 98.75),
                   "olora+rora": (92.00, 10.81)},
    },
}


#: Table 5 (SST-2, RoBERTa and LLaMA) as its text states it (§6.2)
ABLATION_CLAIMS = [
    "adding any single component of RoRA improves Δ over the LoRA baseline at comparable CA",
    "CI alone already reduces ASR below 25% in several cases",
    "Tr alone can leave ASR very high under InSent (93–98%)",
    "the full combination (CI + Tr + Pt) achieves the lowest ASR and the highest Δ, ASR below 20% everywhere",
]

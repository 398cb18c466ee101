"""The paper's reproduction on SynthCXR: shared run steps (`steps`) and one module per experiment (`grid`: the
four-arm ablation; `continued`: the grown-from-LLaVA regime; `default_model`: the embedded model). `asarg reproduce`
(`cli`) runs them."""

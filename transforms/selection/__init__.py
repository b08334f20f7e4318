"""Selection: which images are kept, and what the audit finds (stage 7).

`select` (`SelectClean`: the `components` or `degree` policy per class, then the class-size
rule), `apply_reviews` (`ApplyReviews`: a person's verdicts after the rules), `audit`
(`FindAuditCandidates`, `AuditLabels`: duplicates and cross-class matches verified from the
store, split classes), `audit_signatures` (perceptual hash, global signature and SimHash bands;
pure numpy) and `c2x` (`ExportRejectedSameClass`).

Public composite: `SelectClean`; beside it in the selection job `ApplyReviews`,
`ExportRejectedSameClass` and `AuditLabels`, whose candidates `FindAuditCandidates` finds in the
curation job.

Layer: the top, beside `transforms.overlap` (neither imports the other). Imports any stage below
(`transforms.matching`, `transforms.features`, `transforms.ingest`), `schemas` and
`transforms.plumbing`. Two lower modules import it through documented seams:
`transforms.features.stage` (`audit_signatures`) and `transforms.matching.rounds` (`select`).
"""

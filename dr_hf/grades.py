"""The diabetic retinopathy grading scale shared by every module."""

GRADE_NAMES = ["No DR", "Mild", "Moderate", "Severe", "Proliferative DR"]
NUM_GRADES = len(GRADE_NAMES)
REFERABLE_MIN_GRADE = 2  # moderate NPDR or worse is referred to an ophthalmologist

ID2LABEL = dict(enumerate(GRADE_NAMES))
LABEL2ID = {name: grade for grade, name in ID2LABEL.items()}

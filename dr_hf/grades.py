"""The diabetic retinopathy grading scale shared by every module."""

GRADE_NAMES = ["No DR", "Mild", "Moderate", "Severe", "Proliferative DR"]
NUM_GRADES = len(GRADE_NAMES)
REFERABLE_MIN_GRADE = 2  # moderate NPDR or worse is referred to an ophthalmologist

ID2LABEL = dict(enumerate(GRADE_NAMES))
LABEL2ID = {name: grade for grade, name in ID2LABEL.items()}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

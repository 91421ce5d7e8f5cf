"""Unseen-object 6D pose estimation (FoundPose): onboarding from a mesh, pose from RGB."""

from pylocalize.objects.onboarding import onboard
from pylocalize.objects.representation import BagOfWords, ObjectPose, ObjectRepresentation

__all__ = ["BagOfWords", "ObjectPose", "ObjectRepresentation", "onboard"]

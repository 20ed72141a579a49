"""Presentation: tables (:mod:`.tables`), plots (:mod:`.plots`) and model-checking and
prediction figures (:mod:`.diagnostics`). Numbers in, formatted
tables and figures out; no statistics are computed here.
"""
from __future__ import annotations

from iop_research._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    'modality_by_week': 'tables',
    'swimmer_data': 'tables',
    'TABLE_ONE_COLUMNS': 'tables',
    'table_one': 'tables',
    'format_table_one': 'tables',
    'standardized_mean_difference': 'tables',
    'model_table': 'tables',
    'format_p_value': 'tables',
    'suppress_attrition': 'tables',
    'format_attrition': 'tables',
    'los_summary': 'tables',
    'smooth_curve': 'tables',
    'to_csv': 'tables',
    'to_html': 'tables',
    'to_latex': 'tables',
    'export_table': 'tables',
    'LABEL_COLUMNS': 'tables',
    'OKABE_ITO': 'plots',
    'LINESTYLES': 'plots',
    'MARKERS': 'plots',
    'STYLE_RC': 'plots',
    'style': 'plots',
    'apply_style': 'plots',
    'plot_km': 'plots',
    'plot_funnel': 'programmes',
    'plot_caterpillar': 'programmes',
    'plot_cif': 'plots',
    'plot_forest': 'plots',
    'plot_love': 'plots',
    'plot_swimmer': 'plots',
    'plot_attrition': 'plots',
    'plot_modality_heatmap': 'plots',
    'plot_los': 'plots',
    'plot_schoenfeld': 'plots',
    'plot_functional_form': 'diagnostics',
    'plot_influence': 'diagnostics',
    'plot_adjusted_survival': 'diagnostics',
    'plot_calibration': 'diagnostics',
    'figure_caption': 'plots',
    'Publisher': 'publish',
    'Published': 'publish',
    'PublishedNumber': 'publish',
})
